package cachecore

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/cachecore/index"
)

// Hashing as chunks land. sha256 is sequential, so an image's hash is
// grown over the contiguous prefix of its present chunks: when chunk
// `next` lands, a hasher goroutine of the image reads it back from the
// data file (the page cache: it was just written) and hashes it, then the
// chunks after it that are present, and stops at the first missing one;
// the chunk that fills the gap starts it again. A cold read that was
// sequential (cp, sha256sum, qemu-img convert, a VM boot that streams)
// thus leaves the image hashed soon after its last byte lands, and
// verified (or found invalid) then; chunks that landed out of order are
// hashed when the prefix reaches them. The hasher never runs on a
// reader's path: readers wait for chunks to land, and a chunk lands
// before it is hashed.
//
// One sha256 pass decides: of the whole image when it has a digest (the
// verdict), of each chunk when it has none (its sums, all there is to
// record). The chunk sums of an image with a digest are made by a second
// pass after its verdict (sumsAfterVerdict), at a low priority and off
// the verdict's path: the image is served settled (passthrough) while it
// runs. Two passes side by side cost the cold read's cores twice the CPU
// and put the verdict, and so the first passthrough open, a second or
// more after the last byte on a busy machine.
//
// What the prefix hash has covered must still be what the data file
// holds when the verdict is given. A drop of chunks (a failed
// verification, a check, an eviction) starts it over (verifyState.gen).
// So does a change of the file that is not ours: while a hash is in
// progress every write of ours notes the file's ctime before and after
// (ownWrites), so that the verdict's stamp (rest.go) is the file as the
// hash saw it; another program's write in between shows as a ctime that
// is not ours, and the hash starts over from the file as it is.
//
// The hash of an image that is not complete lives while the image has
// users or its hasher runs (memory: 32 bytes a chunk); then it is dropped,
// and the next open hashes the prefix again, off the reader's path as
// before.

// verifyState is an image's hash in progress, under img.mu. The hash
// itself (whole, sums, next) belongs to the hasher while running is set.
type verifyState struct {
	run     *verifyRun // what waiters of the verdict wait on; nil if none asked
	running bool       // a hasher goroutine runs
	done    bool       // the verdict on every chunk is given: nothing to hash until a drop
	gen     uint64     // bumped by every drop
	hashed  uint64     // the gen the hash is of: if not gen, the hash is void

	started bool      // the pass over [0, next) has begun, with the writes watched
	whole   hash.Hash // sha256 of chunks [0, next), for an image with a digest; nil without
	sums    []byte    // the sums of chunks [0, next), for an image without a digest
	next    int

	summing *verifyRun // the chunk sums of a verified image being made (sumsAfterVerdict); nil if none
}

// resetLocked voids the hash: some chunk was dropped, or the last user
// let go of an image that is not complete. A running hasher starts over.
func (v *verifyState) resetLocked() {
	v.gen++
	v.done = false
	if !v.running {
		v.clear()
	}
}

func (v *verifyState) clear() {
	v.started, v.whole, v.sums, v.next, v.hashed = false, nil, nil, 0, v.gen
}

// hashSoonLocked starts the image's hasher if the chunk its prefix waits
// for is present (or every chunk is hashed and the verdict is due) and
// none runs. It is cheap: land calls it for every chunk.
func (img *Image) hashSoonLocked() {
	v := &img.hashState
	switch {
	case v.running || v.done:
		return
	case img.c.ctx.Err() != nil:
		img.endRunLocked(ErrClosed)
		return
	case v.next < img.nChunks && !img.present.Has(v.next):
		img.endRunLocked(nil) // not complete: a waiter looks again
		return
	}
	if err := img.c.storageLost(); err != nil { // nothing to hash (storage.go)
		img.endRunLocked(err)
		return
	}
	v.running = true
	img.c.wg.Add(1)
	go img.c.hashAlong(img)
}

// endRunLocked ends the verification someone waits for, with err (nil:
// look at the image again).
func (img *Image) endRunLocked(err error) {
	if run := img.hashState.run; run != nil {
		run.err = err
		close(run.done)
		img.hashState.run = nil
	}
}

// hashAlong is the hasher: it hashes present chunks from the prefix's end
// while there are any, and gives the verdict once every chunk is hashed.
// It reads the data file through a descriptor of its own, so that it is
// not a user of the image: an image being hashed may be evicted, which
// voids the hash and ends the hasher.
func (c *Cache) hashAlong(img *Image) {
	defer c.wg.Done()
	v := &img.hashState
	stop := func(err error) { // img.mu held
		v.running = false
		img.endRunLocked(err)
		if img.users == 0 && !img.present.Complete() {
			v.clear() // nobody reads it now: free the hash
			img.writes.unwatch()
		}
	}
	select {
	case c.verifying <- struct{}{}: // one image hashed at a time: it is CPU bound
		defer func() { <-c.verifying }()
	case <-c.ctx.Done():
		img.mu.Lock()
		stop(ErrClosed)
		img.mu.Unlock()
		return
	}
	lowPriority() // after the readers (lowprio.go)
	f, err := c.store.OpenFile(img.id, os.O_RDONLY)
	if err != nil {
		img.mu.Lock()
		if img.present.Count() > 0 { // else evicted meanwhile: nothing to hash
			err = &Error{Op: "verify", Name: img.entry.Name, Err: err}
			c.log.Warn("verifying image", "image", img.entry.Name, "err", err)
			img.recordErrorLocked(err)
		}
		stop(err)
		img.mu.Unlock()
		return
	}
	defer f.Close()
	bufp := piecePool.Get().(*[]byte)
	defer piecePool.Put(bufp)
	chunk := sha256.New()
	urgent := false
	img.mu.Lock()
	defer img.mu.Unlock()
	if v.hashed != v.gen {
		v.clear()
	}
	for {
		if c.ctx.Err() != nil {
			stop(ErrClosed)
			return
		}
		if v.hashed != v.gen { // chunks were dropped: start over, maybe in a new file
			v.clear()
			v.running = false
			img.hashSoonLocked()
			return
		}
		if !v.started {
			v.started = true
			if img.wantDigest() != "" {
				v.whole = sha256.New()
			} else {
				v.sums = make([]byte, 0, min(img.nChunks, 1024)*sha256.Size)
			}
			img.writes.watch(f)
		}
		i := v.next
		if i == img.nChunks {
			img.mu.Unlock()
			done := c.giveVerdict(img, f)
			img.mu.Lock()
			if done {
				return
			}
			continue
		}
		if !img.present.Has(i) { // the prefix ends here for now
			stop(nil)
			return
		}
		// Once every chunk has landed nobody waits for a chunk: the verdict
		// is what a strict reader or a check waits for (lowprio.go). Lazy
		// readers do not: they are served from the pages the cold read left
		// (Image.KeepPages), so the hash stays low behind them.
		if !urgent && img.present.Complete() && (img.c.cfg.Verify == VerifyStrict || v.run != nil) {
			urgent = true
			normalPriority()
		}
		h := v.whole
		if h == nil {
			chunk.Reset()
			h = chunk
		}
		img.mu.Unlock()
		err := hashRange(f, int64(i)*img.chunkSize, img.chunkLen(i), *bufp, h)
		img.mu.Lock()
		if err != nil {
			err = &Error{Op: "verify", Name: img.entry.Name, Err: err}
			c.log.Warn("verifying image", "image", img.entry.Name, "err", err)
			img.recordErrorLocked(err)
			v.clear()
			stop(err)
			return
		}
		c.stats.BytesHashed.Add(uint64(img.chunkLen(i)))
		if v.hashed == v.gen {
			if v.whole == nil {
				v.sums = chunk.Sum(v.sums)
			}
			v.next++
		}
	}
}

// hashRange reads [off, off+n) of f into buf, piece by piece, and
// writes it to h.
func hashRange(f *os.File, off, n int64, buf []byte, h hash.Hash) error {
	for n > 0 {
		p := buf[:min(n, int64(len(buf)))]
		if _, err := f.ReadAt(p, off); err != nil {
			return err
		}
		h.Write(p)
		off += int64(len(p))
		n -= int64(len(p))
	}
	return nil
}

// giveVerdict ends a hash that covered every chunk: the image is verified
// (or, without a digest, its sums recorded) or invalid. It reports false
// when the file changed under the hash (a drop, or a write not ours): the
// hasher goes round again.
func (c *Cache) giveVerdict(img *Image, f *os.File) bool {
	v := &img.hashState
	stamp, clean := img.writes.settle(f)
	got := ""
	if v.whole != nil {
		got = hex.EncodeToString(v.whole.Sum(nil))
	}
	sums := v.sums
	img.mu.Lock()
	gen := v.hashed
	if v.gen != gen { // a drop: the hasher starts over
		img.mu.Unlock()
		return false
	}
	want := img.wantDigest()
	if !clean || (want != "") != (v.whole != nil) {
		if !clean {
			c.log.Info("the data file changed while it was hashed, not by imgcache: hashing it again", "image", img.entry.Name)
		} // else the image gained or lost its digest (a new listing) while it was hashed
		v.clear()
		img.mu.Unlock()
		return false
	}
	img.mu.Unlock()
	switch {
	case want != "" && got != want:
		c.invalidate(img, want, got) // drops every chunk, which voids the hash
	case want == "":
		if err := c.idx.Write(&index.Batch{Sums: map[string][]byte{img.id: sums}}); err != nil {
			c.log.Warn("recording chunk checksums", "image", img.entry.Name, "err", err)
		}
	}
	img.mu.Lock()
	if v.gen == gen && got == want {
		if want != "" {
			img.rec.Verdict = index.Verified
			img.dirty = true
			img.startSumsLocked(gen, stamp)
		}
		img.markCheckedLocked(stamp) // the hash was a check of every chunk
		img.forgetSumsLocked()
		v.done = true
	}
	var settled []string // every name of it: the kernel may know the inode by any
	if want != "" && img.settledLocked() {
		settled = img.names()
	}
	v.clear()
	v.running = false
	img.writes.unwatch()
	img.endRunLocked(nil)
	img.mu.Unlock()
	if settled != nil {
		c.cfg.Notifier.Settled(img, settled)
	}
	c.kickFlush()
	return true
}

// wantDigest is the hex sha256 the image must hash to; "" if none.
func (img *Image) wantDigest() string {
	return strings.TrimPrefix(img.entry.Digest, "sha256:")
}

// ownWrites tells this process's writes to a data file from others',
// while a hash is in progress (watching): each write notes the file's
// stamp before (it must be the one after our last write) and after. With
// the fine-grained ctime of Linux 6.13+ every write after a stat gets a
// ctime of its own; with coarse timestamps a write in the same tick as
// one of ours goes unseen (rest.go says the same of checks at rest).
type ownWrites struct {
	mu       sync.Mutex // protects the following; a leaf lock
	watching bool
	last     fileStamp // the file after our last write, or when watching began
	foreign  bool      // a change not ours was seen
}

// watch starts watching f, as it is now.
func (w *ownWrites) watch(f *os.File) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watching, w.foreign = true, false
	w.last, _ = fstamp(f)
}

func (w *ownWrites) unwatch() {
	w.mu.Lock()
	w.watching = false
	w.mu.Unlock()
}

// write writes p at off to the data file f.
func (w *ownWrites) write(f fileWriterAt, p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	of, ok := f.(*os.File)
	if !w.watching || !ok {
		return f.WriteAt(p, off)
	}
	if before, err := fstamp(of); err != nil || before != w.last {
		w.foreign = true
	}
	n, err := f.WriteAt(p, off)
	w.last, _ = fstamp(of)
	return n, err
}

// around makes a write to f (do) as write does: for writes not made here
// (splice(2), upstream.Splicer).
func (w *ownWrites) around(f *os.File, do func() error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.watching {
		return do()
	}
	if before, err := fstamp(f); err != nil || before != w.last {
		w.foreign = true
	}
	err := do()
	w.last, _ = fstamp(f)
	return err
}

// settle reports the stamp of f and whether nothing but our writes
// changed it since watching began.
func (w *ownWrites) settle(f *os.File) (fileStamp, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now, err := fstamp(f)
	return now, err == nil && w.watching && !w.foreign && now == w.last
}

// fstamp is stampOf without an allocation: it runs twice per write.
func fstamp(f *os.File) (fileStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStamp{}, err
	}
	return fileStamp{ino: st.Ino, ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec)}, nil
}
