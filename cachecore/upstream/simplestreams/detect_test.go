package simplestreams

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/internal/teststreams"
)

// A plain URL is a simplestreams server if its root has the streams, else
// a directory; a server down at first decides nothing: the first answer
// does, and what was remembered meanwhile reaches the upstream chosen.
func TestDetect(t *testing.T) {
	ctx := context.Background()
	tree, ng := serveTree(t, smallSpec())
	ng.Stop()
	d, err := Detect(ng.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	remembered := []upstream.Entry{{Name: IndexPath, Size: 2, Content: []byte("{}"), ETag: `"x"`}}
	d.Remember(upstream.KnownList(remembered))
	if _, err := d.List(ctx); err == nil || d.Chosen() != "" {
		t.Fatalf("List of a server that is down: %v, chosen %q; want an error and no choice", err, d.Chosen())
	}
	ng.Start()
	if _, err := d.choice(ctx); err != nil || d.Chosen() != "simplestreams" {
		t.Fatalf("a simplestreams server: %v, chosen %q", err, d.Chosen())
	}
	if f := d.streams.files[IndexPath]; f == nil || f.ETag != `"x"` {
		t.Fatal("the entries remembered before the choice did not reach the streams")
	}
	entries, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !d.RetainsRemoved() {
		t.Fatal("a mirror of a simplestreams server does not retain removed items")
	}
	if len(entries) != len(tree.Items)+2 { // and index.json, images.json
		t.Fatalf("%d entries, want the %d items and the two JSON files", len(entries), len(tree.Items))
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "a.img"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := teststreams.StartNginx(t, other, teststreams.NginxOptions{Server: "autoindex on; autoindex_format json;"})
	d, err = Detect(plain.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err = d.List(ctx)
	if err != nil || d.Chosen() != "directory" || len(entries) != 1 || entries[0].Name != "a.img" {
		t.Fatalf("List of a directory: %v %v, chosen %q", entries, err, d.Chosen())
	}
	if d.RetainsRemoved() {
		t.Fatal("an HTTP directory retains removed images")
	}
}
