package cachecore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
)

// readChunksAt reads the given chunks of img through one handle, each
// from its own goroutine, all at once; it fails the test on a read error
// or wrong bytes.
func readChunksAt(t *testing.T, c *Cache, img *Image, data []byte, chunks ...int) {
	t.Helper()
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var wg sync.WaitGroup
	errs := make([]error, len(chunks))
	for k, i := range chunks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * testChunk
			b := make([]byte, min(testChunk, int64(len(data))-off))
			if _, err := h.ReadAt(b, off); err != nil {
				errs[k] = err
			} else if !bytes.Equal(b, data[off:off+int64(len(b))]) {
				errs[k] = fmt.Errorf("chunk %d: wrong bytes", i)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A server that ignores Range sends each image once, however it is read:
// a sequential reader, as before quadratic bytes.
func TestRangeIgnoredSequentialReadSendsImageOnce(t *testing.T) {
	up := newFake()
	data := randomBytes(40*testChunk+123, 50)
	up.Add("x.img", data, true)
	up.SetIgnoreRange(true)
	c := openTest(t, t.TempDir(), up)
	img := mustLookup(t, c, "x.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := up.Fetched(); got != int64(len(data)) {
		t.Fatalf("the server sent %d bytes (%.2fx) for an image of %d", got, float64(got)/float64(len(data)), len(data))
	}
}

// Readers of scattered chunks of a cold image, all at once, before the
// cache knows whether the server honours Range: one asks, the others wait
// for its reply; it is whole and becomes the image's stream, the others
// hand their chunks to it without asking, and the server sends the image
// once.
func TestRangeIgnoredConcurrentReadersShareOneStream(t *testing.T) {
	up := newFake()
	data := randomBytes(64*testChunk, 51)
	up.Add("x.img", data, false)
	up.SetIgnoreRange(true)
	gate := make(chan struct{})
	up.SetGate(gate)
	c := openTest(t, t.TempDir(), up)
	img := mustLookup(t, c, "x.img")
	done := make(chan struct{})
	go func() {
		defer close(done)
		readChunksAt(t, c, img, data, 3, 0, 17, 40, 41, 63, 9)
	}()
	waitFor(t, func() bool { // every reader has claimed its chunk, one asked
		img.mu.Lock()
		defer img.mu.Unlock()
		return len(img.flights) >= 7 && up.Requests() >= 1
	})
	close(gate)
	<-done
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := up.Fetched(); got != int64(len(data)) {
		t.Fatalf("the server sent %d bytes (%.2fx) for an image of %d", got, float64(got)/float64(len(data)), len(data))
	}
	if got := img.CachedBytes(); got != int64(len(data)) {
		t.Fatalf("%d bytes cached: the stream stops short of the image's end", got)
	}
	if got := up.Requests(); got != 1 {
		t.Fatalf("%d requests, want 1", got)
	}
}

// Once the cache knows its upstream ignores Range, the next image starts
// as a stream: readers of several chunks at once cost one request, and
// the image arrives whole.
func TestRangeIgnoredIsRemembered(t *testing.T) {
	up := newFake()
	a, b := randomBytes(8*testChunk, 52), randomBytes(48*testChunk+7, 53)
	up.Add("a.img", a, false)
	up.Add("b.img", b, false)
	up.SetIgnoreRange(true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	readAll(t, c, mustLookup(t, c, "a.img"))
	if !c.noRanges.Load() {
		t.Fatal("a whole reply was not noted")
	}
	reqs, sent := up.Requests(), up.Fetched()
	img := mustLookup(t, c, "b.img")
	readChunksAt(t, c, img, b, 30, 2, 47, 48, 12)
	waitFor(t, func() bool { return img.CachedBytes() == int64(len(b)) })
	if got := up.Requests() - reqs; got != 1 {
		t.Errorf("%d requests for the second image, want 1", got)
	}
	if got := up.Fetched() - sent; got != int64(len(b)) {
		t.Errorf("the server sent %d bytes for an image of %d", got, len(b))
	}
}

// A server that answers ranges again (the note was of another image, or
// of a proxy's cold blob) ends the stream once nothing it was asked for is
// left: a partial reader gets what it read, not the rest of the image.
func TestRangeAnsweredAgainEndsStream(t *testing.T) {
	up := newFake()
	data := randomBytes(64*testChunk, 54)
	up.Add("x.img", data, false)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	c.noRanges.Store(true)
	img := mustLookup(t, c, "x.img")
	readChunksAt(t, c, img, data, 10)
	if c.noRanges.Load() {
		t.Error("a range reply did not clear the note")
	}
	readChunksAt(t, c, img, data, 50)
	waitFor(t, func() bool { img.mu.Lock(); defer img.mu.Unlock(); return len(img.flights) == 0 })
	if got := img.CachedBytes(); got != 2*testChunk {
		t.Errorf("%d bytes cached after reading 2 chunks", got)
	}
}

// A whole reply cut short is asked for again from where the stream
// stopped; the bytes are right and readers are served.
func TestRangeIgnoredStreamRecoversFromShortReply(t *testing.T) {
	up := newFake()
	a, data := randomBytes(2*testChunk, 56), randomBytes(32*testChunk, 55)
	up.Add("a.img", a, false)
	up.Add("x.img", data, true)
	up.SetIgnoreRange(true)
	var cut atomic.Bool
	up.SetBody(func(ctx context.Context, name string, body io.ReadCloser) io.ReadCloser {
		if name == "x.img" && cut.CompareAndSwap(false, true) {
			return &cutBody{ReadCloser: body, left: 10*testChunk + 99}
		}
		return body
	})
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	readAll(t, c, mustLookup(t, c, "a.img")) // the cache learns that the upstream ignores Range
	reqs := up.Requests()
	img := mustLookup(t, c, "x.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if got := up.Requests() - reqs; got != 2 {
		t.Errorf("%d requests, want 2 (the cut reply and the rest)", got)
	}
}

// cutBody ends a body after left bytes, as a dropped connection does.
type cutBody struct {
	io.ReadCloser
	left int
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= n
	return n, err
}
