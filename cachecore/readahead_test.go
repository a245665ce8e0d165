package cachecore

import (
	"context"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
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

// One large read, as file -s makes at each end of an image (7 MiB), is
// what the reader asked for: nothing is read ahead of it. Close waits for
// every fetch, so the count is final.
func TestOneLargeReadDoesNotReadAhead(t *testing.T) {
	up := newFake()
	up.AddEntry(upstream.Entry{Name: "big.img", Size: 256 << 20})
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ChunkSize = 1 << 20 })
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	const n = 7 << 20
	for _, off := range []int64{0, img.Size() - n} {
		if _, err := h.Read(context.Background(), off, n); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().BytesFetched.Load(); got != 2*n {
		t.Fatalf("two reads of %d bytes fetched %d", n, got)
	}
}

// A sequential reader that stops has at most as much fetched ahead of it
// as it read: read-ahead grows while the reader consumes what it brought,
// and stops with it.
func TestReadAheadStopsWithTheReader(t *testing.T) {
	up := newFake()
	up.AddEntry(upstream.Entry{Name: "big.img", Size: 256 << 20})
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ChunkSize = 1 << 20 })
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	const read = 40 << 20
	for off := int64(0); off < read; off += 1 << 20 {
		if _, err := h.Read(context.Background(), off, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	got := c.Stats().BytesFetched.Load()
	t.Logf("a sequential read of %d bytes fetched %d (%.2fx)", read, got, float64(got)/read)
	if got <= read || got > 2*read {
		t.Fatalf("a sequential read of %d bytes fetched %d; want read-ahead, at most as much as was read", read, got)
	}
}

// The kernel sends the READs of its read-ahead window at once (254 pages
// each, not aligned to chunks) and they arrive in any order. A reader
// whose READs come so is still one sequential stream: its chunks are
// asked for in runs, not one range request per chunk (one request a
// chunk made a registry upstream, which looks every request up in its
// storage, the slowest part of a cold read).
func TestKernelOrderedReadsFetchInRuns(t *testing.T) {
	up := newFake()
	data := randomBytes(96<<20, 11)
	up.Add("big.img", data, false)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ChunkSize = 1 << 20 })
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	const req = 254 << 12 // a READ of 254 pages
	size := int64(len(data))
	for win := int64(0); win < size; win += kernelWindow {
		var offs []int64
		for off := win; off < min(win+kernelWindow, size); off += req {
			offs = append(offs, off)
		}
		for i := len(offs) - 1; i >= 0; i-- { // the window's READs last first
			n := int(min(req, size-offs[i]))
			b := make([]byte, n)
			if _, err := h.ReadAt(b, offs[i]); err != nil {
				t.Fatal(err)
			}
			if string(b) != string(data[offs[i]:offs[i]+int64(n)]) {
				t.Fatalf("bytes at %d differ", offs[i])
			}
		}
	}
	h.Close()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	chunks := size >> 20
	got, requests := c.Stats().BytesFetched.Load(), up.Requests()
	t.Logf("%d chunks read in %d range requests, %d bytes fetched", chunks, requests, got)
	if got != uint64(size) {
		t.Fatalf("a read of %d bytes fetched %d; want each chunk once", size, got)
	}
	// The first readAheadStart bytes are asked for as read (16 requests);
	// runs after that. One request a chunk made 85.
	if requests > chunks/2 {
		t.Fatalf("%d chunks read sequentially took %d range requests; want runs (at most %d)", chunks, requests, chunks/2)
	}
}
