package simplestreams

import (
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

var jsonFiles = map[string]*httpdir.File{
	IndexPath:                {Data: []byte(`{"format":"index:1.0"}`), ETag: `"1"`},
	"streams/v1/images.json": {Data: []byte(`{"format":"products:1.0"}`)},
}

func it(name string, size int64, sum, product, version string) item {
	return item{Name: name, Size: size, SHA256: sum, file: "p.json", product: product, version: version, key: name,
		Attrs: map[string]string{"product": product, "version": version}}
}

func TestCatalog(t *testing.T) {
	entries, err := catalog(jsonFiles, []item{
		it("images/a/1/root", 5, sumA, "a", "1"),
		it("images/a/2/root", 6, sumB, "a", "2"),
		it("images/shared", 7, sumC, "a", "1"),
		it("images/shared", 7, sumC, "a", "2"), // the same file in two versions
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			t.Errorf("entry %q: %v", e.Name, err)
		}
		names = append(names, e.Name)
		switch {
		case strings.HasPrefix(e.Name, "streams/"):
			if e.Content == nil || e.ByDigest || e.Size != int64(len(e.Content)) {
				t.Errorf("JSON file %+v", e)
			}
		default:
			if e.Content != nil || !e.ByDigest || !strings.HasPrefix(e.Digest, "sha256:") {
				t.Errorf("item %+v", e)
			}
		}
		if e.Name == IndexPath && e.ETag != `"1"` {
			t.Errorf("index ETag %q", e.ETag)
		}
		if e.Name == "images/shared" && e.Attrs["version"] != "2" {
			t.Errorf("a file of two versions belongs to %q, want the newest", e.Attrs["version"])
		}
	}
	if got := strings.Join(names, " "); got != "streams/v1/images.json streams/v1/index.json images/a/1/root images/a/2/root images/shared" {
		t.Fatalf("entries %s", got)
	}
}

func TestCatalogRefusesInconsistentTrees(t *testing.T) {
	for _, c := range []struct {
		name  string
		items []item
		want  string
	}{
		{"one path, two sizes", []item{it("images/x", 5, sumA, "a", "1"), it("images/x", 6, sumA, "b", "1")},
			`p.json: product "b" version "1" item "images/x": path "images/x" has size 6 and sha256 ` + sumA + `, but p.json: product "a" version "1" item "images/x" gives it size 5`},
		{"one path, two digests", []item{it("images/x", 5, sumA, "a", "1"), it("images/x", 5, sumB, "a", "2")}, "sha256 " + sumB},
		{"item over the index", []item{it(IndexPath, 5, sumA, "a", "1")}, "is the JSON file " + IndexPath},
		{"item over a product file", []item{it("streams/v1/images.json", 5, sumA, "a", "1")}, "is the JSON file streams/v1/images.json"},
		{"file where a directory is", []item{it("images/a", 5, sumA, "a", "1"), it("images/a/b", 5, sumB, "a", "1")},
			`p.json: product "a" version "1" item "images/a": a file at "images/a", where p.json: product "a" version "1" item "images/a/b" needs a directory`},
		{"directory where a file is", []item{it("images/a/b", 5, sumB, "a", "1"), it("images/a", 5, sumA, "a", "1")}, `a file at "images/a"`},
		{"item below a JSON file", []item{it("streams/v1/index.json/x", 5, sumA, "a", "1")}, `the JSON file streams/v1/index.json: a file at`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := catalog(jsonFiles, c.items)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
		})
	}
}
