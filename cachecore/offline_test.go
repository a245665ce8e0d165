package cachecore

import (
	"bytes"
	"errors"
	"testing"
)

// TestFailedRefreshKeepsCatalogAndSaysStale: a refresh that fails drops
// nothing, and the catalog says since when it is stale, across a restart,
// until a refresh succeeds.
func TestFailedRefreshKeepsCatalogAndSaysStale(t *testing.T) {
	up := newFake()
	data := randomBytes(128<<10, 21)
	up.Add("a.img", data, true)
	up.Add("b.img", randomBytes(64<<10, 22), false)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	readAll(t, c, mustLookup(t, c, "a.img"))
	up.SetListErr(errors.New("connection refused"))
	if err := c.refresh(c.ctx); err == nil {
		t.Fatal("refresh succeeded")
	}
	st := c.CatalogStatus()
	if st.StaleSince.IsZero() || st.Err == nil {
		t.Fatalf("after a failed refresh: %+v", st)
	}
	c.refresh(c.ctx) // a second failure keeps the first time
	if got := c.CatalogStatus().StaleSince; !got.Equal(st.StaleSince) {
		t.Fatalf("StaleSince moved from %v to %v", st.StaleSince, got)
	}
	c.Close()

	c = openTest(t, dir, up)
	defer c.Close()
	if got := c.CatalogStatus().StaleSince; !got.Equal(st.StaleSince) {
		t.Fatalf("after restart StaleSince = %v, want %v", got, st.StaleSince)
	}
	for _, name := range []string{"a.img", "b.img"} {
		mustLookup(t, c, name)
	}
	up.SetFetchErr(func(string, int64, int64) error { return errors.New("upstream down") })
	if got := readAll(t, c, mustLookup(t, c, "a.img")); !bytes.Equal(got, data) {
		t.Fatal("cached image wrong offline")
	}
	up.SetListErr(nil)
	if err := c.refresh(c.ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.CatalogStatus(); !st.StaleSince.IsZero() || st.Err != nil {
		t.Fatalf("after a successful refresh: %+v", st)
	}
}
