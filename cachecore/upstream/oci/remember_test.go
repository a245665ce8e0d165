package oci

import (
	"context"
	"io"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestRemember: an upstream told the entries of the last catalog (what
// the cache holds at start) fetches no manifest it had, and keeps a tag
// at its last manifest when the new one is refused, as the upstream that
// made the catalog would have.
func TestRemember(t *testing.T) {
	f := newFakeRegistry()
	good := f.manifest(f.artifact(titled(f.blob([]byte("disk")), "disk.img")))
	f.tag("r", "t", good)
	first, _ := newFakeUpstream(t, f, Options{})
	es := listOK(t, first)
	gets := f.count("GET /v2/r/manifests/")

	again, _ := newFakeUpstream(t, f, Options{})
	again.Remember(upstream.KnownList(es))
	if !sameCatalog(listOK(t, again), es) {
		t.Errorf("the catalog after Remember differs")
	}
	if g := f.count("GET /v2/r/manifests/") - gets; g != 0 {
		t.Errorf("%d manifest GETs after Remember, want none", g)
	}

	// A manifest's bytes read from memory, no request.
	m := entry(t, es, "r/blobs/sha256/"+good[len("sha256:"):])
	m.Content = nil
	before := f.count("")
	r, err := again.Fetch(context.Background(), m, 0, m.Size)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	if digestOf(b) != good || f.count("") != before {
		t.Errorf("manifest fetched with %d requests, digest %s", f.count("")-before, digestOf(b))
	}

	// The tag moves to a manifest refused: the remembered one stays.
	bad := f.manifest([]byte(`{"schemaVersion":1}`))
	f.tag("r", "t", bad)
	third, logs := newFakeUpstream(t, f, Options{})
	third.Remember(upstream.KnownList(es))
	if tags := indexTags(t, listOK(t, third), "r"); tags["t"] != good {
		t.Errorf("tag t names %s after a refused move, want %s kept\n%s", tags["t"], good, logs)
	}
}
