package simplestreams

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/teststreams"
)

// editProducts rewrites the tree's product file through edit, which gets
// it decoded.
func editProducts(t *testing.T, dir string, edit func(p map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, teststreams.ProductsPath))
	if err != nil {
		t.Fatal(err)
	}
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	edit(p)
	if err := teststreams.WriteJSON(dir, teststreams.ProductsPath, p); err != nil {
		t.Fatal(err)
	}
}

// items returns the items of a version of a decoded product file.
func items(p map[string]any, product, version string) map[string]any {
	return p["products"].(map[string]any)[product].(map[string]any)["versions"].(map[string]any)[version].(map[string]any)["items"].(map[string]any)
}

// Each bad product file or index makes List fail with a message that
// names what is wrong, and the next List of a good tree works: the
// cache keeps its last good catalog meanwhile.
func TestListRefusesBadTrees(t *testing.T) {
	const prod, ver = "debian:bookworm:amd64:default", "20240102_05:24"
	setItem := func(key string, v any) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			editProducts(t, dir, func(p map[string]any) { items(p, prod, ver)["root.squashfs"].(map[string]any)[key] = v })
		}
	}
	for _, c := range []struct {
		name string
		bad  func(t *testing.T, dir string)
		want string
	}{
		{"path with ..", setItem("path", "images/../../../etc/shadow"), `item "root.squashfs": path: unsafe name`},
		{"absolute path", setItem("path", "/etc/shadow"), `item "root.squashfs": path "/etc/shadow" is not a clean relative path`},
		{"NUL in a path", setItem("path", "images/a\x00b"), "control character U+0000"},
		{"malformed sha256", setItem("sha256", "nothex"), `sha256 "nothex" is not 64 hex digits`},
		{"negative size", setItem("size", -5), "size -5 is outside"},
		{"duplicate path, other size", func(t *testing.T, dir string) {
			editProducts(t, dir, func(p map[string]any) {
				a := items(p, prod, "20240101_05:24")["root.squashfs"].(map[string]any)
				b := items(p, prod, ver)["root.squashfs"].(map[string]any)
				b["path"], b["size"] = a["path"], a["size"].(float64)+1
			})
		}, `/20240101_05:24/root.squashfs" has size 3073`},
		{"index naming a missing product file", func(t *testing.T, dir string) {
			err := teststreams.WriteJSON(dir, teststreams.IndexPath, map[string]any{"format": "index:1.0", "index": map[string]any{
				"images": map[string]any{"datatype": "image-downloads", "path": "streams/v1/missing.json", "products": []string{prod}}}})
			if err != nil {
				t.Fatal(err)
			}
		}, "streams/v1/index.json names product file streams/v1/missing.json, which the server does not have"},
		{"a product file of 50 MB", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, teststreams.ProductsPath))
			b = append(b, bytes.Repeat([]byte(" "), 50_000_000)...) // valid JSON still
			if err := teststreams.WriteFile(dir, teststreams.ProductsPath, b); err != nil {
				t.Fatal(err)
			}
		}, "streams/v1/images.json is larger than its cap of 33554432 bytes"},
		{"truncated product file", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, teststreams.ProductsPath))
			if err := teststreams.WriteFile(dir, teststreams.ProductsPath, b[:len(b)/2]); err != nil {
				t.Fatal(err)
			}
		}, "streams/v1/images.json: not valid JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := scaledSpec(1024) // what is refused is in the JSON
			tree, ng := serveTree(t, spec)
			u := newUpstream(t, ng.URL, Options{})
			good, err := u.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			c.bad(t, tree.Dir)
			_, err = u.List(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("List of a bad tree: %v\nwant an error saying %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "simplestreams: ") || !strings.Contains(err.Error(), ng.URL) {
				t.Errorf("error %q does not name the upstream", err)
			}
			t.Logf("refused: %v", err)
			if _, err := teststreams.Write(tree.Dir, spec); err != nil {
				t.Fatal(err)
			}
			again, err := u.List(context.Background())
			if err != nil || len(again) != len(good) {
				t.Fatalf("List of the good tree again: %d entries, %v; want %d", len(again), err, len(good))
			}
		})
	}
}

// A JSON file that never ends is cut at its cap.
func TestEndlessJSONIsCutOff(t *testing.T) {
	for _, name := range []string{IndexPath, "streams/v1/images.json"} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/"+IndexPath && name != IndexPath {
					w.Write([]byte(`{"format":"index:1.0","index":{"i":{"datatype":"image-downloads","path":"streams/v1/images.json","products":["p"]}}}`))
					return
				}
				w.Write([]byte(`{"format":"products:1.0","products":{"p":{"versions":{"v":{"items":{"i":{"path":"`))
				buf := bytes.Repeat([]byte("a"), 64<<10)
				for r.Context().Err() == nil {
					if _, err := w.Write(buf); err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			u := newUpstream(t, srv.URL, Options{MaxIndexBytes: 1 << 20, MaxProductBytes: 4 << 20})
			_, err := u.List(context.Background())
			if err == nil || !strings.Contains(err.Error(), name+" is larger than its cap of") {
				t.Fatalf("endless %s: %v", name, err)
			}
		})
	}
}

// The caps cannot be raised past what the cache takes as Content.
func TestCapsAreBounded(t *testing.T) {
	u := newUpstream(t, "https://h/", Options{MaxProductBytes: 1 << 40, MaxIndexBytes: 1 << 40})
	if u.opts.MaxProductBytes > 64<<20 || u.opts.MaxIndexBytes > 64<<20 {
		t.Fatalf("caps %d, %d", u.opts.MaxProductBytes, u.opts.MaxIndexBytes)
	}
}
