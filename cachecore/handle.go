package cachecore

import (
	"context"
	"io"
	"os"
	"sync"
	"time"
)

// Handle is one open of an image for reading. It keeps the data file open
// (a Span's file stays valid until Close) and watches the access pattern
// to decide read-ahead.
type Handle struct {
	// read only
	img  *Image
	file *os.File

	mu     sync.Mutex // protects the following
	seqEnd int64      // end of the sequential stream being read, -1 before the first read
	seqLen int64      // how many bytes that stream has covered
	raEnd  int        // read-ahead has been started for chunks below this
	closed bool

	held      error // a recent read failure, repeated until heldUntil (retry.go)
	heldUntil time.Time
}

// Span says where the bytes of a read are: Len bytes of File at Off. The
// bytes are present in the file: the caller may hand the file to the
// kernel (splice) rather than copy them.
type Span struct {
	File *os.File
	Off  int64
	Len  int
}

// Open opens an image for reading and counts it as a hit. The kernel may
// answer later reads from its page cache without asking us, so opens are
// the only reliable count.
func (c *Cache) Open(img *Image) (*Handle, error) {
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.acquireLocked(); err != nil {
		return nil, err
	}
	if img.rec.Verdict == invalid { // its chunks were dropped: fetch afresh
		img.rec.Verdict = unchecked
	}
	img.rec.Hits++
	img.rec.LastAccess = c.now()
	img.dirty = true
	c.stats.Opens.Add(1)
	return &Handle{img: img, file: img.file, seqEnd: -1}, nil
}

// Image is the image this handle reads.
func (h *Handle) Image() *Image { return h.img }

// Read makes [off, off+n) present (clipped to the image size) and says
// where it is. A read at or past the end gives an empty span. If ctx ends
// first Read returns its error, but the fetches it started go on.
func (h *Handle) Read(ctx context.Context, off int64, n int) (Span, error) {
	img := h.img
	size := img.entry.Size
	if off >= size || n <= 0 {
		return Span{File: h.file, Off: off}, nil
	}
	n = int(min(int64(n), size-off))
	first := int(off / img.chunkSize)
	last := int((off + int64(n) - 1) / img.chunkSize)

	if img.c.cfg.Verify == VerifyStrict {
		if err := img.awaitVerified(ctx); err != nil {
			return Span{}, err
		}
	} else {
		if from, to := h.plan(off, n, last); from < to {
			h.readAheadTo(img.c.readAhead(img, from, to))
		}
		if err := h.ensureBounded(ctx, first, last); err != nil {
			return Span{}, err
		}
	}
	img.c.stats.BytesServed.Add(uint64(n))
	return Span{File: h.file, Off: off, Len: n}, nil
}

// plan watches for a sequential stream and returns the chunks [from, to)
// to read ahead, if any. Read-ahead starts only once a stream has covered
// two chunks, so that a reader of a small part of an image fetches little
// more than it reads; from then on the window grows with the stream (as
// the kernel's own read-ahead does) up to the configured maximum. Reads a
// little out of order, as the kernel's concurrent read-ahead sends them,
// still count as sequential.
func (h *Handle) plan(off int64, n int, last int) (from, to int) {
	img := h.img
	cs := img.chunkSize
	h.mu.Lock()
	defer h.mu.Unlock()
	end := off + int64(n)
	if h.seqEnd >= 0 && off <= h.seqEnd+cs && end >= h.seqEnd-2*cs {
		h.seqLen += max(0, end-h.seqEnd)
		h.seqEnd = max(h.seqEnd, end)
	} else {
		h.seqEnd, h.seqLen, h.raEnd = end, int64(n), 0
	}
	maxWindow := img.c.cfg.ReadAhead
	if h.seqLen < 2*cs || maxWindow <= 0 {
		return 0, 0
	}
	window := min(h.seqLen, maxWindow)
	from = max(last+1, h.raEnd)
	to = min(img.nChunks, int((h.seqEnd+window+cs-1)/cs))
	if from >= to {
		return 0, 0
	}
	return from, to
}

// readAheadTo notes that chunks below end are present or on their way.
func (h *Handle) readAheadTo(end int) {
	h.mu.Lock()
	h.raEnd = max(h.raEnd, end)
	h.mu.Unlock()
}

// ReadAt reads like io.ReaderAt, copying from the data file; for callers
// that want bytes rather than a Span (tests, the verifier, the API).
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	sp, err := h.Read(context.Background(), off, len(p))
	if err != nil {
		return 0, err
	}
	k, err := h.file.ReadAt(p[:sp.Len], off)
	if err == nil && k < len(p) {
		err = io.EOF
	}
	return k, err
}

// Close ends this open. Spans it returned are invalid afterwards.
func (h *Handle) Close() error {
	h.mu.Lock()
	closed := h.closed
	h.closed = true
	h.mu.Unlock()
	if !closed {
		h.img.release()
	}
	return nil
}

// Fd is the data file's descriptor, valid until Close.
func (h *Handle) Fd() uintptr { return h.file.Fd() }
