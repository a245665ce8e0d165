package cachecore

import (
	"context"
	"testing"
	"time"
)

// A flush that took its snapshot of an image before the image left the
// catalog must not write the image's record back after its deletion:
// the record came back listed at the next start, beside the image's new
// version (seen as two versions of one name, the old one pinned, when a
// pin followed a new version).
func TestFlushDoesNotBringBackADeletedRecord(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.Add("a.img", randomBytes(100*kib, 1), true)
	c := openTest(t, dir, up, func(cfg *Config) { cfg.FlushInterval = time.Hour }) // flushed when kicked
	img := mustLookup(t, c, "a.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return !img.InUse() && img.Info().State == StateVerified }) // nothing more to record
	dirty := func() bool {
		img.mu.Lock()
		defer img.mu.Unlock()
		return img.dirty
	}

	// A flush takes its snapshot of the changed record and waits to
	// write it.
	c.life.indexMu.Lock()
	h, err := c.Open(img) // a hit: the record changed
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	flushed := make(chan error, 1)
	go func() { flushed <- c.flush() }()
	waitFor(t, func() bool { return !dirty() }) // this flush's snapshot, or the flusher's
	up.Remove("a.img")
	refreshed := make(chan error, 1)
	go func() { refreshed <- c.refresh(context.Background()) }()
	waitFor(t, func() bool {
		img.mu.Lock()
		defer img.mu.Unlock()
		return img.retired
	})
	time.Sleep(50 * time.Millisecond) // let an unordered delete be written first, as it was
	c.life.indexMu.Unlock()
	if err := <-refreshed; err != nil {
		t.Fatal(err)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = openTest(t, dir, up)
	defer c.Close()
	if _, ok := c.Lookup("a.img"); ok {
		t.Error("a.img, deleted from the catalog, is listed again after a restart")
	}
}
