package httpdir

import (
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// The fuzz targets check that parsers of what an upstream sends never
// panic and only ever hand out clean names. Seeds are in
// testdata/fuzz/<Name>/, the captured listings among them.

func checkCleanName(t *testing.T, name string) {
	t.Helper()
	if c, err := upstream.CleanName(name); err != nil || c != name || path.Clean(name) != name {
		t.Fatalf("name %q is not clean: %v", name, err)
	}
}

var fuzzDir = dirRef{url: &url.URL{Scheme: "http", Host: "h", Path: "/base/sub/"}, name: "sub"}

func FuzzParseHTMLListing(f *testing.F) {
	f.Add([]byte(`<a href="../">..</a><a href="/base/sub/x.img">x</a><a href="%2e%2e/y">y</a><a href='d/'>d</a>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		l := parseHTMLListing(body, fuzzDir)
		for _, lk := range l.links {
			checkCleanName(t, lk.name)
			if !strings.HasPrefix(lk.name, "sub/") {
				t.Fatalf("link %q is not below the listed directory", lk.name)
			}
		}
	})
}

func FuzzParseJSONListing(f *testing.F) {
	f.Add([]byte(`[{"name":"..","type":"directory"},{"name":"a","type":"file","size":-5}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		l, err := parseJSONListing(body, fuzzDir)
		if err != nil {
			return
		}
		for _, lk := range l.links {
			checkCleanName(t, lk.name)
			if lk.size < -1 {
				t.Fatalf("size %d", lk.size)
			}
		}
	})
}

func FuzzParseSHA256SUMS(f *testing.F) {
	f.Add([]byte(treeSumsContent("")))
	f.Add([]byte("SHA256 (a b) = " + strings.Repeat("0", 64) + "\r\n" + strings.Repeat("F", 64) + "  ./../x\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		sums, _ := parseSHA256SUMS(body)
		for name, d := range sums {
			checkCleanName(t, name)
			if len(d) != len("sha256:")+64 || !strings.HasPrefix(d, "sha256:") || strings.ToLower(d) != d {
				t.Fatalf("digest %q", d)
			}
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"version":1,"images":[{"name":"a/b.img","size":3,"sha256":"` + strings.Repeat("a", 64) + `","mtime":"2024-01-01T00:00:00.5Z","etag":"\"x\""}]}`))
	f.Add([]byte(`{"version":1,"images":[{"name":"../x","size":-1},{"name":"a","size":1},{"name":"a","size":2}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		entries, _, err := parseIndex(body, 1000)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range entries {
			checkCleanName(t, e.Name)
			if seen[e.Name] || e.Size < 0 || usableETag(e.ETag) != e.ETag {
				t.Fatalf("entry %+v", e)
			}
			seen[e.Name] = true
		}
	})
}
