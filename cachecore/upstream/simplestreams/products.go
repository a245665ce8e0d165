package simplestreams

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// products is a product file (products:1.0): products, each with
// versions, each with items, the files of the version.
type products struct {
	Format   string             `json:"format"`
	Products map[string]product `json:"products"`
}

type product struct {
	Aliases      string             `json:"aliases"`
	Arch         string             `json:"arch"`
	OS           string             `json:"os"`
	Release      string             `json:"release"`
	ReleaseTitle string             `json:"release_title"`
	Variant      string             `json:"variant"`
	Versions     map[string]version `json:"versions"`
}

type version struct {
	Items map[string]productItem `json:"items"`
}

// productItem is one file, as the product file describes it. The
// combined hashes are LXD's fingerprints of the image a metadata tarball
// makes with each kind of root file of its version: the sha256 of the
// two files' bytes one after the other.
type productItem struct {
	Path   string `json:"path"`
	Size   *int64 `json:"size"`
	SHA256 string `json:"sha256"`
	FType  string `json:"ftype"`

	CombinedSHA256         string `json:"combined_sha256"`
	CombinedRootXzSHA256   string `json:"combined_rootxz_sha256"`
	CombinedSquashfsSHA256 string `json:"combined_squashfs_sha256"`
	CombinedDiskKVMSHA256  string `json:"combined_disk-kvm-img_sha256"`
	CombinedDisk1SHA256    string `json:"combined_disk1-img_sha256"`
	CombinedUEFI1SHA256    string `json:"combined_uefi1-img_sha256"`
}

// item is one file of the tree that a product file names.
type item struct {
	Name    string // its path below the mirror's root
	Size    int64
	SHA256  string    // lowercase hex
	ModTime time.Time // from the version's name, zero if it is not a date
	Attrs   map[string]string

	file, product, version, key string // where it was named, for messages
}

// where names the item in messages.
func (it *item) where() string {
	return fmt.Sprintf("%s: product %q version %q item %q", it.file, it.product, it.version, it.key)
}

// combined maps the attribute an item shows to the combined hash field of
// the metadata tarball it comes from, one per kind of root file.
var combinedFields = []struct {
	attr string
	get  func(*productItem) string
}{
	{"combined_sha256", func(i *productItem) string { return i.CombinedSHA256 }},
	{"combined_rootxz_sha256", func(i *productItem) string { return i.CombinedRootXzSHA256 }},
	{"combined_squashfs_sha256", func(i *productItem) string { return i.CombinedSquashfsSHA256 }},
	{"combined_disk_kvm_img_sha256", func(i *productItem) string { return i.CombinedDiskKVMSHA256 }},
	{"combined_disk1_img_sha256", func(i *productItem) string { return i.CombinedDisk1SHA256 }},
	{"combined_uefi1_img_sha256", func(i *productItem) string { return i.CombinedUEFI1SHA256 }},
}

// parseProducts reads the product file at path and returns its items,
// in a stable order (by product, version, item key). Every item must
// have a clean path, a size in [0, upstream.MaxSize] and a sha256: a
// product file naming a file the mirror could not list as published is
// refused whole, since the mirror serves it byte for byte.
func parseProducts(path string, body []byte, maxItems int) ([]item, error) {
	var p products
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, jsonError(err))
	}
	if p.Format != productsFormat {
		return nil, fmt.Errorf("%s: format is %q, want %q", path, p.Format, productsFormat)
	}
	var items []item
	shown := attrChecker()
	for _, pname := range sortedKeys(p.Products) {
		prod := p.Products[pname]
		for _, vname := range sortedKeys(prod.Versions) {
			ver := prod.Versions[vname]
			meta := metadataItem(ver)
			mtime := versionTime(vname)
			for _, key := range sortedKeys(ver.Items) {
				pi := ver.Items[key]
				it := item{file: path, product: pname, version: vname, key: key}
				if err := it.check(&pi); err != nil {
					return nil, err
				}
				it.ModTime = mtime
				it.Attrs = attrsOf(pname, vname, &prod, &pi, meta, shown)
				items = append(items, it)
				if len(items) > maxItems {
					return nil, fmt.Errorf("%s: more than %d items", path, maxItems)
				}
			}
		}
	}
	return items, nil
}

// check takes pi's path, size and sha256 into it, or says why not.
func (it *item) check(pi *productItem) error {
	if err := checkPath(pi.Path); err != nil {
		return fmt.Errorf("%s: %w", it.where(), err)
	}
	if pi.Size == nil {
		return fmt.Errorf("%s: no size", it.where())
	}
	if *pi.Size < 0 || *pi.Size > upstream.MaxSize {
		return fmt.Errorf("%s: size %d is outside [0, %d]", it.where(), *pi.Size, int64(upstream.MaxSize))
	}
	sum := strings.ToLower(pi.SHA256)
	if !isSHA256(sum) {
		if pi.SHA256 == "" {
			return fmt.Errorf("%s: no sha256", it.where())
		}
		return fmt.Errorf("%s: sha256 %q is not 64 hex digits", it.where(), pi.SHA256)
	}
	it.Name, it.Size, it.SHA256 = pi.Path, *pi.Size, sum
	return nil
}

// Kinds of files of an LXD or Incus image (an item's ftype).
var (
	metadataTypes = []string{"lxd.tar.xz", "incus.tar.xz"}
	unifiedTypes  = []string{"lxd_combined.tar.gz", "incus_combined.tar.gz"}
)

// metadataItem is the version's metadata tarball, if it has exactly one.
func metadataItem(v version) *productItem {
	var meta *productItem
	for _, key := range sortedKeys(v.Items) {
		if pi := v.Items[key]; slices.Contains(metadataTypes, pi.FType) {
			if meta != nil {
				return nil
			}
			meta = &pi
		}
	}
	return meta
}

// fingerprint is LXD's fingerprint of the image whose root file (or
// unified tarball) pi is, as LXD picks it: a unified tarball is its own
// sha256; a root file's is the combined hash of its kind on the
// version's metadata tarball. "" for other files (the metadata tarball
// belongs to as many images as its version has kinds of root file).
func fingerprint(pi, meta *productItem) string {
	if slices.Contains(unifiedTypes, pi.FType) {
		return strings.ToLower(pi.SHA256)
	}
	if meta == nil {
		return ""
	}
	var fp string
	switch pi.FType {
	case "root.tar.xz":
		fp = meta.CombinedRootXzSHA256
		if fp == "" {
			fp = meta.CombinedSHA256
		}
	case "squashfs":
		fp = meta.CombinedSquashfsSHA256
	case "disk-kvm.img":
		fp = meta.CombinedDiskKVMSHA256
	case "disk1.img":
		fp = meta.CombinedDisk1SHA256
	case "uefi1.img":
		fp = meta.CombinedUEFI1SHA256
	}
	return strings.ToLower(fp)
}

// attrsOf gives the facts clients use about an item, as xattrs: where
// it comes from (product, version), what it is (ftype, fingerprint, the
// combined hashes of a metadata tarball), and the product's os, release,
// arch, variant and aliases. A value that is not printable text of at
// most upstream.MaxAttrLen bytes, or a hash that is not one, is left out.
func attrsOf(pname, vname string, prod *product, pi, meta *productItem, shown func(string) bool) map[string]string {
	a := make(map[string]string, 12)
	set := func(k, v string) {
		if v != "" && shown(v) {
			a[k] = v
		}
	}
	setHash := func(k, v string) {
		if v = strings.ToLower(v); isSHA256(v) {
			a[k] = v
		}
	}
	set("product", pname)
	set("version", vname)
	set("ftype", pi.FType)
	set("os", prod.OS)
	set("release", prod.Release)
	set("release_title", prod.ReleaseTitle)
	set("arch", prod.Arch)
	set("variant", prod.Variant)
	set("aliases", prod.Aliases)
	setHash("fingerprint", fingerprint(pi, meta))
	for _, f := range combinedFields {
		setHash(f.attr, f.get(pi))
	}
	return a
}

// attrChecker returns a test of whether a value can be shown as an
// attribute (what upstream.Entry.Validate accepts), remembering its
// answers: a product file repeats the same few values on every item.
func attrChecker() func(string) bool {
	seen := map[string]bool{}
	return func(v string) bool {
		ok, known := seen[v]
		if !known {
			ok = len(v) <= upstream.MaxAttrLen && (upstream.Entry{Name: "x", Attrs: map[string]string{"k": v}}).Validate() == nil
			seen[v] = ok
		}
		return ok
	}
}

// versionTime reads a version's name as its date, as LXD does:
// YYYYMMDD, optionally followed by _HH:MM ("20240101_05:24"); zero if
// the name is not a date.
func versionTime(v string) time.Time {
	if len(v) >= 14 && v[8] == '_' {
		if t, err := time.Parse("20060102_15:04", v[:14]); err == nil {
			return t
		}
	}
	if len(v) >= 8 {
		if t, err := time.Parse("20060102", v[:8]); err == nil {
			return t
		}
	}
	return time.Time{}
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
