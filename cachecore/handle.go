package cachecore

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
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
	raWant int        // read-ahead should reach this chunk (readahead.go)
	closed bool

	held      error // a recent read failure, repeated until heldUntil (retry.go)
	heldUntil time.Time
}

// Span says where the bytes of a read are: Len bytes of File at Off. The
// bytes are present in the file: the caller may hand the file to the
// kernel (splice) rather than copy them. When the bytes could not be
// stored (no room: ErrNoRoom) they were read straight from the upstream:
// Data holds them and File is nil.
type Span struct {
	File *os.File
	Off  int64
	Len  int
	Data []byte
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
	c.inUseLocked(img)
	if img.rec.Verdict == index.Invalid { // its chunks were dropped: fetch afresh
		img.rec.Verdict = index.Unchecked
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
	if h.file == nil { // the storage is lost and the file with it (storage.go)
		if img.c.cfg.Verify == VerifyStrict {
			return Span{}, &Error{Op: "read", Name: img.entry.Name, Err: img.c.storageLost()}
		}
		return h.readAroundBounded(ctx, off, n)
	}
	first := int(off / img.chunkSize)
	last := int((off + int64(n) - 1) / img.chunkSize)

	if img.c.cfg.Verify == VerifyStrict {
		if err := h.awaitVerifiedBounded(ctx); err != nil {
			return Span{}, err
		}
	} else {
		if h.plan(off, n, last) {
			h.pump()
		}
		if err := h.ensureBounded(ctx, first, last); err != nil {
			if readsAround(err) { // the size limit or a full disk: read around the cache
				return h.readAroundBounded(ctx, off, n)
			}
			return Span{}, err
		}
	}
	img.c.stats.BytesServed.Add(uint64(n))
	return Span{File: h.file, Off: off, Len: n}, nil
}

// ReadAt reads like io.ReaderAt, copying from the data file; for callers
// that want bytes rather than a Span (tests, the verifier, the API).
func (h *Handle) ReadAt(p []byte, off int64) (int, error) {
	sp, err := h.Read(context.Background(), off, len(p))
	if err != nil {
		return 0, err
	}
	var k int
	if sp.Data != nil {
		k = copy(p, sp.Data)
	} else {
		k, err = h.file.ReadAt(p[:sp.Len], off)
	}
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
