package simplestreams

import (
	"slices"
	"strings"
	"testing"
)

// The fuzz targets check that what a server sends never panics the
// parsers, and that whatever they accept makes a catalog the cache takes
// whole: every entry valid, one entry per path, no file where a
// directory must be.

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"format":"index:1.0","index":{"images":{"datatype":"image-downloads","path":"streams/v1/images.json","format":"products:1.0","products":["a"]}}}`))
	f.Add([]byte(`{"format":"index:1.0","index":{"a":{"datatype":"image-downloads","path":"../x","products":["a"]},"b":{"datatype":"image-ids","path":"/y"}}}`))
	f.Add([]byte(`{"format":"index:1.0","index":{"a":{"datatype":"image-downloads","path":"a//b","products":[]}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		paths, err := parseIndex(body, 4)
		if err != nil {
			return
		}
		if len(paths) > 4 || !slices.IsSorted(paths) || len(slices.Compact(slices.Clone(paths))) != len(paths) {
			t.Fatalf("product files %q", paths)
		}
		for _, p := range paths {
			if err := checkPath(p); err != nil || p == IndexPath {
				t.Fatalf("product file %q accepted: %v", p, err)
			}
		}
	})
}

func FuzzParseProducts(f *testing.F) {
	f.Add(productFile(map[string]map[string]map[string]any{
		"20240102_05:24": {
			"lxd.tar.xz":    {"ftype": "lxd.tar.xz", "path": "images/d/2/lxd.tar.xz", "size": 10, "sha256": sumA, "combined_squashfs_sha256": sumC},
			"root.squashfs": {"ftype": "squashfs", "path": "images/d/2/root.squashfs", "size": 20, "sha256": sumB},
		},
		"20240101": {
			"lxd_combined.tar.gz": {"ftype": "lxd_combined.tar.gz", "path": "images/d/2", "size": 5, "sha256": sumC},
			"again":               {"ftype": "squashfs", "path": "images/d/2/root.squashfs", "size": 21, "sha256": sumB},
		},
	}))
	f.Add([]byte(`{"format":"products:1.0","products":{"p":{"aliases":"a,b","arch":"amd64","versions":{"v":{"items":{"i":{"path":"streams/v1/index.json","size":1,"sha256":"` + sumA + `"}}}}}}}`))
	f.Add([]byte(`{"format":"products:1.0","products":{"p":{"versions":{"v":{"items":{"i":{"path":"a/../b","size":-1,"sha256":""}}}}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := parseProducts("streams/v1/images.json", body, 1000)
		if err != nil {
			return
		}
		if len(items) > 1000 {
			t.Fatalf("%d items over the cap", len(items))
		}
		for _, it := range items {
			if err := checkPath(it.Name); err != nil || it.Size < 0 || !isSHA256(it.SHA256) {
				t.Fatalf("item accepted: %+v (%v)", it, err)
			}
		}
		entries, err := catalog(jsonFiles, items)
		if err != nil {
			return
		}
		names := map[string]bool{}
		for _, e := range entries {
			if err := e.Validate(); err != nil {
				t.Fatalf("the cache would refuse %q: %v", e.Name, err)
			}
			if names[e.Name] {
				t.Fatalf("%q listed twice", e.Name)
			}
			names[e.Name] = true
		}
		for n := range names {
			for d := n; strings.Contains(d, "/"); {
				d = d[:strings.LastIndexByte(d, '/')]
				if names[d] {
					t.Fatalf("%q is a file and the directory of %q", d, n)
				}
			}
		}
	})
}
