package cachecore

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// checkingUpstream answers only a fetch that names an image as the
// upstream lists it now (its name, ETag and date), as an HTTP server
// does: a reply's validators that are not the entry's mean the image
// changed (httpdir's checkSameVersion), a name it no longer has is 404.
type checkingUpstream struct {
	*upstreamtest.Upstream
	mu  sync.Mutex
	now upstream.Entry
}

func (u *checkingUpstream) publish(e upstream.Entry, data []byte) {
	u.mu.Lock()
	u.now = e
	u.mu.Unlock()
	u.Upstream.Remove(e.Name)
	u.AddEntryData(e, data)
}

func (u *checkingUpstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	u.mu.Lock()
	now := u.now
	u.mu.Unlock()
	switch {
	case e.Name != now.Name:
		return nil, fmt.Errorf("%q: %w", e.Name, upstream.ErrNotFound)
	case e.ETag != now.ETag || !e.ModTime.Equal(now.ModTime):
		return nil, fmt.Errorf("ETag is %s, was %s: %w", now.ETag, e.ETag, upstream.ErrChanged)
	}
	return u.Upstream.Fetch(ctx, e, off, n)
}

// TestRepublishedBytesStillFetch: the upstream publishes the bytes an
// image has again, as a new file (a new ETag and date, the same digest),
// or under a new name. It is the same image (its digest), and what it
// has not cached yet is fetched as the upstream lists it now, also after
// a restart. (The model found it: the record kept the old validators, and
// every uncached read failed as "changed upstream" for ever.)
func TestRepublishedBytesStillFetch(t *testing.T) {
	data := randomBytes(256<<10, 31)
	up := &checkingUpstream{Upstream: newFake()}
	v1 := upstream.Entry{Name: "a.img", Size: int64(len(data)), Digest: upstreamtest.Digest(data),
		ETag: `"v1"`, ModTime: time.Unix(1e9, 0).UTC()}
	up.publish(v1, data)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "a.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64<<10)
	if _, err := h.ReadAt(b, 0); err != nil { // the first chunk of four
		t.Fatal(err)
	}
	h.Close()

	v2 := v1
	v2.ETag, v2.ModTime = `"v2"`, v1.ModTime.Add(time.Hour)
	up.publish(v2, data)
	refreshNow(t, c)
	if mustLookup(t, c, "a.img") != img {
		t.Fatal("the same bytes republished are a new image")
	}
	h, err = c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReadAt(b, 64<<10); err != nil {
		t.Fatalf("reading what is not cached after the bytes were republished: %v", err)
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	v3 := v2
	v3.Name, v3.ETag = "b.img", `"v3"`
	up.publish(v3, data)
	up.Upstream.Remove("a.img")
	c = openTest(t, dir, up)
	refreshNow(t, c)
	img = mustLookup(t, c, "b.img")
	if got := readAll(t, c, img); string(got) != string(data) {
		t.Fatal("the bytes differ")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up) // the record holds the validators listed last
	defer c.Close()
	up.SetDown(fmt.Errorf("down"))
	img = mustLookup(t, c, "b.img")
	if img.fetchEntry().ETag != `"v3"` || img.Name() != "b.img" {
		t.Fatalf("after a restart the image is fetched as %+v", img.fetchEntry())
	}
}
