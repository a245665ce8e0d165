package cachecore

import (
	"testing"
)

// A reader of a small part of an image, even sequential, fetches what it
// reads and no more: read-ahead waits for a longer stream. Close waits
// for every fetch, so the count is final.
func TestShortSequentialReadDoesNotReadAhead(t *testing.T) {
	up := newFake()
	up.Add("big.img", randomBytes(64<<20, 9), false)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ChunkSize = 1 << 20 })
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	b := make([]byte, 128<<10)
	const read = 2 << 20 // what the kernel asks for one 1 MiB read at a file's start
	for off := int64(0); off < read; off += int64(len(b)) {
		if _, err := h.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().BytesFetched.Load(); got != read {
		t.Fatalf("a %d-byte sequential read fetched %d bytes", read, got)
	}
}

// A long sequential reader gets read-ahead in whole runs, and the whole
// image arrives exactly once.
func TestLongSequentialReadFetchesEachChunkOnce(t *testing.T) {
	up := newFake()
	data := randomBytes(48<<20, 10)
	up.Add("big.img", data, false)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ChunkSize = 1 << 20 })
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	b := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(data)); off += int64(len(b)) {
		if _, err := h.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		if string(b) != string(data[off:off+int64(len(b))]) {
			t.Fatalf("bytes at %d differ", off)
		}
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().BytesFetched.Load(); got != uint64(len(data)) {
		t.Fatalf("a sequential read of %d bytes fetched %d", len(data), got)
	}
}
