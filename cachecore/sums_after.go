package cachecore

import (
	"context"
	"crypto/sha256"
	"os"

	"github.com/imgcache/imgcache/cachecore/index"
)

// The chunk sums of an image with a digest, made after its verdict
// (hashing.go): one more sha256 pass, of each chunk, at a low priority.
// They are recorded only if they are of the bytes the verdict was given
// on: no chunk was dropped since (the hash's generation) and the data
// file is as it was then (its inode and ctime, as rest.go tells changes),
// the image still verified. Until they are recorded a check or the scrub
// verifies the image again instead (check.go verifyNow), and a refetched
// chunk is not compared with a sum (sums.go); a stop in between leaves
// them to that.

// startSumsLocked starts making the sums of an image just verified, on
// the cache's context, unless that runs already.
func (img *Image) startSumsLocked(gen uint64, stamp fileStamp) {
	v := &img.hashState
	if v.summing != nil || img.c.ctx.Err() != nil {
		return
	}
	run := &verifyRun{done: make(chan struct{})}
	v.summing = run
	img.c.wg.Add(1)
	go img.c.sumsAfterVerdict(img, gen, stamp, run)
}

// sumsAfterVerdict makes and records the chunk sums of img, verified at
// generation gen with its data file at stamp.
func (c *Cache) sumsAfterVerdict(img *Image, gen uint64, stamp fileStamp, run *verifyRun) {
	defer c.wg.Done()
	var err error
	defer func() {
		img.mu.Lock()
		if img.hashState.summing == run {
			img.hashState.summing = nil
		}
		img.mu.Unlock()
		run.err = err
		close(run.done)
	}()
	select {
	case c.summing <- struct{}{}:
		defer func() { <-c.summing }()
	case <-c.ctx.Done():
		err = ErrClosed
		return
	}
	lowPriority()
	lowestPriority() // nothing waits for them: behind the hasher too
	// still reports whether the sums made so far are of the verified bytes.
	still := func() bool {
		img.mu.Lock()
		defer img.mu.Unlock()
		return img.hashState.gen == gen && img.rec.Verdict == index.Verified && c.ctx.Err() == nil
	}
	f, err := c.store.OpenFile(img.id, os.O_RDONLY)
	if err != nil {
		return
	}
	defer f.Close()
	bufp := piecePool.Get().(*[]byte)
	defer piecePool.Put(bufp)
	h := sha256.New()
	sums := make([]byte, 0, img.nChunks*sha256.Size)
	for i := range img.nChunks {
		if !still() {
			return
		}
		h.Reset()
		if err = hashRange(f, int64(i)*img.chunkSize, img.chunkLen(i), *bufp, h); err != nil {
			return
		}
		sums = h.Sum(sums)
	}
	if now, serr := fstamp(f); serr != nil || now != stamp || !still() {
		return // changed since the verdict: a check verifies it again
	}
	if err = c.idx.Write(&index.Batch{Sums: map[string][]byte{img.id: sums}}); err != nil {
		c.log.Warn("recording chunk checksums", "image", img.entry.Name, "err", err)
		return
	}
	img.mu.Lock()
	img.forgetSumsLocked()
	img.mu.Unlock()
}

// awaitSums waits for the chunk sums of a verified image being made.
func (img *Image) awaitSums(ctx context.Context) {
	img.mu.Lock()
	run := img.hashState.summing
	img.mu.Unlock()
	if run != nil {
		awaitRun(ctx, run)
	}
}
