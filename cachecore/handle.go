package cachecore

import (
	"context"
	"errors"
	"fmt"
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
	seqLen int64      // how many bytes of that stream were read
	raEnd  int        // read-ahead has been started for chunks below this
	raWant int        // read-ahead should reach this chunk (plan)
	raWin  int64      // bytes read-ahead wants ahead of the stream; 0: not started
	raMark int        // a read of this chunk makes read-ahead go on (plan)
	closed bool

	held      error // a recent read failure, repeated until heldUntil (holdFailure)
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
	if img.rec.Verdict == index.Invalid && img.nChunks > 0 { // its chunks were dropped: fetch afresh
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
			if readsAround(err) { // lazy would read around the cache; strict cannot
				err = img.noRoomStrict(err)
			}
			return Span{}, err
		}
	} else {
		pump, claimTo := h.plan(off, n, last)
		if pump {
			h.pump()
		}
		if err := h.ensureBounded(ctx, first, last, claimTo); err != nil {
			if readsAround(err) { // the size limit or a full disk: read around the cache
				return h.readAroundBounded(ctx, off, n)
			}
			return Span{}, err
		}
	}
	img.c.stats.BytesServed.Add(uint64(n))
	return Span{File: h.file, Off: off, Len: n}, nil
}

// noRoomStrict is the error of a strict read of an image that cannot be
// cached whole (the size limit, or a full disk): strict mode serves no
// byte it has not verified, and it verifies only whole images. It is
// recorded on the image (user.imgcache.error) and logged when it is new,
// since nothing else would say why the read failed.
func (img *Image) noRoomStrict(err error) error {
	err = &Error{Op: "read", Name: img.entry.Name, Err: fmt.Errorf(
		"%w; --verify=strict serves an image only once all %d bytes are cached and verified", err, img.entry.Size)}
	img.mu.Lock()
	fresh := img.rec.LastError != err.Error()
	img.recordErrorLocked(err)
	img.mu.Unlock()
	if fresh {
		img.c.log.Error("strict read refused: the image cannot be cached whole", "image", img.entry.Name, "err", err)
		img.c.kickFlush()
	}
	return err
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

// CheckAtOpen is called when an image is opened, before the open is
// answered, since the answer may hand the data file to the kernel. It
// checks a settled image's chunks against their sums, waiting for the
// check, when strict mode has not checked them since the mount or when
// its data file changed since it was last checked or opened. A chunk
// that does not match is dropped (check.go) and, since this open has
// the image open, fetched again at once. It fails if the check could not
// be made, if damage found in the file could not be fetched again while
// others have the image open, or with ctx's error (the check goes on for
// the next open).
//
// Why damage left in the file matters: while one open of an image is
// passthrough, go-fuse makes every new open of it passthrough too (it
// reuses the node's backing file), whatever the daemon answers, so a new
// open reads the data file itself.
func (h *Handle) CheckAtOpen(ctx context.Context) error {
	return h.img.checkAtOpen(ctx, h.file)
}

// Read-ahead. A handle watches its reads for a sequential stream; once the
// stream has covered readAheadStart, it wants the chunks up to a window
// ahead of the stream and pumps range requests for them, a whole run at a
// time, into the free fetch slots. A read-ahead run that ends pumps again,
// so the slots stay busy while the reader is blocked in the kernel, not
// only when its next READ arrives.
//
// The window grows only while the reader consumes what read-ahead
// brought, and stops when the reader does, as the kernel's own read-ahead
// does: it starts at half of what the stream has covered; a read that
// reaches its middle (raMark) doubles it, at most to what the stream has
// covered and to Config.ReadAhead, and moves it on. A reader that stops
// leaves at most one window fetched ahead of it, no more than it read: a
// stream never has more than twice its length fetched.

// readAheadStart is how much a sequential stream must cover before
// read-ahead starts: twice the kernel's own read-ahead window for the
// mount (mount/tune.go: 8 MiB). A program's single read is turned by the
// kernel into a burst of READs up to that window (file -s reads 7 MiB in
// one call, which arrives as 8 MiB of READs); those are what the program
// asked for, and read-ahead past them would be fetched for nobody.
const readAheadStart = 2 * kernelWindow

// kernelWindow is the kernel's read-ahead window for the mount
// (mount/tune.go). The kernel sends the READs of a window at once, and
// they arrive in any order: a read near the stream's end, ahead or
// behind, goes on with the stream (plan).
const kernelWindow = 8 << 20

// plan notes a read of [off, off+n) (its last chunk is last) and reports
// whether read-ahead is wanted, and up to which chunk (exclusive) the
// read's own request may claim: within read-ahead's window, a run's worth
// past the read, since the kernel sends a sequential reader's next READs
// a chunk at a time and read-ahead may have no free slot to be ahead of
// them (each chunk was one range request).
func (h *Handle) plan(off int64, n int, last int) (pump bool, claimTo int) {
	img := h.img
	cs := img.chunkSize
	h.mu.Lock()
	defer h.mu.Unlock()
	end := off + int64(n)
	// The kernel has up to two windows of READs out at once (the next
	// one is sent before the last is answered). A jump of more than a
	// window ahead is a new stream: ext4 read through a loop device jumps
	// between files, and counting those as one stream fetched twice what
	// it read.
	if h.seqEnd >= 0 && off <= h.seqEnd+max(kernelWindow, 2*cs) && end >= h.seqEnd-max(2*kernelWindow, 2*cs) {
		h.seqLen += int64(n) // what was read, not the gaps jumped over
		h.seqEnd = max(h.seqEnd, end)
	} else {
		h.seqEnd, h.seqLen, h.raEnd, h.raWant, h.raWin, h.raMark = end, int64(n), 0, 0, 0, 0
	}
	maxWindow := img.c.cfg.ReadAhead
	if h.seqLen < max(readAheadStart, 2*cs) || maxWindow <= 0 {
		return false, last + 1
	}
	h.raEnd = max(h.raEnd, last+1)
	if h.raWin == 0 || last >= h.raMark {
		if h.raWin == 0 {
			h.raWin = min(h.seqLen/2, maxWindow)
		} else {
			h.raWin = min(2*h.raWin, maxWindow, h.seqLen)
		}
		h.raWant = max(h.raWant, min(img.nChunks, int((h.seqEnd+h.raWin+cs-1)/cs)))
		h.raMark = int((h.seqEnd + h.raWin/2) / cs)
	}
	// Whole runs only, while read-ahead is ahead of the reader: one long
	// range request costs less than many short ones.
	claimTo = max(last+1, min(h.raWant, int(off/cs)+maxRunChunks))
	return h.raWant-h.raEnd >= maxRunChunks || h.raWant == img.nChunks || h.raEnd == last+1, claimTo
}

// pump starts read-ahead runs toward raWant while fetch slots are free.
func (h *Handle) pump() {
	h.mu.Lock()
	from, to, closed := h.raEnd, h.raWant, h.closed
	h.mu.Unlock()
	if closed || from >= to {
		return
	}
	img := h.img
	img.mu.Lock()
	if img.file == nil { // every user gone: nothing to read ahead for
		img.mu.Unlock()
		return
	}
	img.users++ // keeps the data file open while runs start
	img.mu.Unlock()
	defer img.release()
	got := img.c.readAhead(img, from, to, h.pump)
	h.mu.Lock()
	h.raEnd = max(h.raEnd, got)
	h.mu.Unlock()
}

// Read deadlines. A reader waits at most ReadTimeout for its bytes,
// whatever the fetch is doing (retries: retry.go), and then gets an error
// (EIO) that is also recorded on the image. A handle whose read failed
// answers further reads of missing bytes with the same error for
// FailHold, so a reader that retries at once does not hammer an upstream
// that has just failed.

// ensureBounded is ensure for a reader: it gives up after ReadTimeout
// (recording why on the image), and repeats a recent failure of this
// handle instead of asking the upstream again.
func (h *Handle) ensureBounded(ctx context.Context, first, last, claimTo int) error {
	img := h.img
	img.mu.Lock()
	present := img.present.NextMissing(first, last+1) > last
	img.mu.Unlock()
	if present { // the warm path (ensure counts the hit): no timer, no held failure
		return img.ensure(ctx, first, last)
	}
	if err := h.heldFailure(first, last); err != nil {
		return err
	}
	timeout := img.c.cfg.ReadTimeout
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrReadTimeout)
	defer cancel()
	return h.boundedResult(ctx, tctx, img.ensureAhead(tctx, first, last, claimTo), "no bytes within the read timeout")
}

// boundedResult finishes a bounded wait that ended with err: a timeout
// (the cause of bctx) becomes an error naming the bound, recorded on the
// image; a failure is held on the handle. A reader that gave up (ctx) gets
// its own error back untouched.
func (h *Handle) boundedResult(ctx, bctx context.Context, err error, what string) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	img := h.img
	if errors.Is(context.Cause(bctx), ErrReadTimeout) {
		err = &Error{Op: "read", Name: img.entry.Name,
			Err: fmt.Errorf("%w: %s of %v", ErrReadTimeout, what, img.c.cfg.ReadTimeout)}
		img.mu.Lock()
		img.recordErrorLocked(err)
		img.mu.Unlock()
	}
	if !errors.Is(err, ErrClosed) {
		h.holdFailure(err)
	}
	return err
}

// heldFailure is the failure this handle repeats, if it is recent and
// chunks [first, last] are not all present.
func (h *Handle) heldFailure(first, last int) error {
	h.mu.Lock()
	err, until := h.held, h.heldUntil
	h.mu.Unlock()
	if err == nil || !time.Now().Before(until) {
		return nil
	}
	img := h.img
	img.mu.Lock()
	missing := img.present.NextMissing(first, last+1) <= last
	img.mu.Unlock()
	if !missing {
		return nil
	}
	return err
}

func (h *Handle) holdFailure(err error) {
	hold := h.img.c.cfg.FailHold
	if hold <= 0 {
		return
	}
	h.mu.Lock()
	h.held, h.heldUntil = err, time.Now().Add(hold)
	h.mu.Unlock()
}

// awaitVerifiedBounded is awaitVerified (strict mode: the whole image
// before any byte) for a reader: it gives up when no chunk has arrived
// for ReadTimeout while the image is incomplete. A strict read of a large
// image may take long, but not without progress.
func (h *Handle) awaitVerifiedBounded(ctx context.Context) error {
	img := h.img
	if err := h.heldFailure(0, img.nChunks-1); err != nil {
		return err
	}
	timeout := img.c.cfg.ReadTimeout
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(max(timeout/8, time.Millisecond))
		defer tick.Stop()
		last, lastAt := -1, time.Now()
		for {
			select {
			case <-done:
				return
			case <-wctx.Done():
				return
			case now := <-tick.C:
				img.mu.Lock()
				count, complete := img.present.Count(), img.present.Complete()
				img.mu.Unlock()
				if complete || count != last {
					last, lastAt = count, now
					continue
				}
				if now.Sub(lastAt) >= timeout {
					cancel(ErrReadTimeout)
					return
				}
			}
		}
	}()
	return h.boundedResult(ctx, wctx, img.awaitVerified(wctx), "no bytes for the read timeout")
}

// readAroundBounded is readDirect (a read served straight from the
// upstream when the cache has no room) within ReadTimeout: waiting for a
// fetch slot that stalled fetches hold counts too.
func (h *Handle) readAroundBounded(ctx context.Context, off int64, n int) (Span, error) {
	img := h.img
	timeout := img.c.cfg.ReadTimeout
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrReadTimeout)
	defer cancel()
	sp, err := img.c.readDirect(tctx, img, off, n)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), ErrReadTimeout) {
		err = &Error{Op: "read", Name: img.entry.Name,
			Err: fmt.Errorf("%w: no bytes within the read timeout of %v", ErrReadTimeout, timeout)}
	}
	return sp, err
}
