package cachecore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestRefreshBuildsTheTreeOnlyWhenItChanges: a refresh that finds the
// catalog as it was keeps its tree (a million images are not placed
// again); one that only drops a cold image, or only changes what a cold
// image's entry says, builds it again, so that the image leaves, and the
// tree's entry (what the next crawl is told the cache knows) says what the
// upstream says now.
func TestRefreshBuildsTheTreeOnlyWhenItChanges(t *testing.T) {
	up := newFake()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entry := func(i int, etag string, mtime time.Time) upstream.Entry {
		return upstream.Entry{Name: fmt.Sprintf("d%d/img%02d", i%2, i), Size: int64(1000 + i),
			Digest: fmt.Sprintf("sha256:%064x", i), ETag: etag, ModTime: mtime}
	}
	for i := range 10 {
		up.AddEntry(entry(i, `"v1"`, t0))
	}
	c := openTest(t, t.TempDir(), up)
	ctx := context.Background()
	if hot, cold := hotCount(c), coldCount(c); hot != 0 || cold != 10 {
		t.Fatalf("%d hot, %d cold; want 10 cold", hot, cold)
	}
	names := func() []string {
		var out []string
		for info := range c.Images("") {
			out = append(out, info.Name)
		}
		return out
	}
	before := names()

	tr := c.tree.Load()
	if err := c.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if c.tree.Load() != tr {
		t.Error("a refresh that changed nothing built the tree again")
	}

	up.Remove("d1/img03")
	if err := c.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Lookup("d1/img03"); ok {
		t.Error("a cold image that left the upstream is still found")
	}
	want := slices.DeleteFunc(slices.Clone(before), func(n string) bool { return n == "d1/img03" })
	if got := names(); !slices.Equal(got, want) {
		t.Errorf("after a cold image left: %q, want %q", got, want)
	}

	t1 := t0.Add(time.Hour)
	up.AddEntry(entry(4, `"v2"`, t1)) // the same bytes (digest) published again
	if err := c.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	e, ok := known{c}.Entry("d0/img04")
	if !ok || e.ETag != `"v2"` || !e.ModTime.Equal(t1) {
		t.Errorf("the catalog knows d0/img04 as %+v (found %v), want ETag \"v2\" and %v", e, ok, t1)
	}
	if info := mustLookup(t, c, "d0/img04").Info(); !info.ModTime.Equal(t1) {
		t.Errorf("d0/img04 shows %v, want %v", info.ModTime, t1)
	}
	if got := names(); !slices.Equal(got, want) {
		t.Errorf("after a cold image changed: %q, want %q", got, want)
	}
}
