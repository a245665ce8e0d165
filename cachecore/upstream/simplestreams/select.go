package simplestreams

import (
	"path"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// What a pin by product or by alias needs from a catalog of this upstream
// ("imgcache pin 'images/debian/bookworm/amd64/default/*'", "imgcache pin
// --alias debian/12/amd64"): the items of the newest version of each
// product the pin names, chosen again at every catalog refresh so that
// a new version is fetched when it appears. Items carry their product
// and version in Attrs; these functions read nothing else.

// ProductVersion returns the product and version of an item of the
// catalog; ok is false for an entry that is not an item (a JSON file).
func ProductVersion(e upstream.Entry) (product, version string, ok bool) {
	product, version = e.Attrs["product"], e.Attrs["version"]
	return product, version, product != "" && version != ""
}

// MatchGlob reports whether the glob (path.Match syntax) matches the
// entry's name or a directory above it: "images/debian/bookworm/*"
// matches every file below images/debian/bookworm/.
func MatchGlob(glob, name string) bool {
	for p := name; ; {
		if ok, _ := path.Match(glob, p); ok {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// HasAlias reports whether the item's product answers to alias as LXD
// resolves one: one of the product's aliases ("debian/12"), or one of
// them, a slash and the product's arch ("debian/12/amd64").
func HasAlias(e upstream.Entry, alias string) bool {
	arch := e.Attrs["arch"]
	for a := range strings.SplitSeq(e.Attrs["aliases"], ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if a == alias || arch != "" && a+"/"+arch == alias {
			return true
		}
	}
	return false
}

// Newest returns the items of the newest version of each product that
// has an item for which pick is true: what a pin keeps complete. The
// newest version is the greatest name (versions are named by date,
// "20240101_05:24", as LXD expects); it is the newest of the whole
// catalog, not only among the items picked.
func Newest(entries []upstream.Entry, pick func(upstream.Entry) bool) []upstream.Entry {
	newest := map[string]string{} // product -> its newest version
	picked := map[string]bool{}
	for _, e := range entries {
		p, v, ok := ProductVersion(e)
		if !ok {
			continue
		}
		if v > newest[p] {
			newest[p] = v
		}
		if !picked[p] && pick(e) {
			picked[p] = true
		}
	}
	var out []upstream.Entry
	for _, e := range entries {
		if p, v, ok := ProductVersion(e); ok && picked[p] && v == newest[p] {
			out = append(out, e)
		}
	}
	return out
}

// Products is this package's Newest and HasAlias as one value: what the
// cache's pins by glob and by alias need of a catalog of products
// (cachecore.Products), given by the mount.
type Products struct{}

// Newest returns what Newest does, and the entries of no product (a JSON
// file; every entry of an upstream of another kind) that pick accepts.
func (Products) Newest(entries []upstream.Entry, pick func(upstream.Entry) bool) []upstream.Entry {
	out := Newest(entries, pick)
	for _, e := range entries {
		if _, _, ok := ProductVersion(e); !ok && pick(e) {
			out = append(out, e)
		}
	}
	return out
}

func (Products) HasAlias(e upstream.Entry, alias string) bool { return HasAlias(e, alias) }
