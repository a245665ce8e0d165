package cachecore

import (
	"context"
	"crypto/sha256"
	"os"
	"sync/atomic"
	"time"

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

// sumsPasses are the sums' passes of a cache. Close gives those running
// a moment (sumsGrace) to end before it stops them: sums missing after a
// restart cost a whole hash at the first check, and, if the file was
// damaged meanwhile, a fetch of the whole image instead of the damaged
// chunk.
type sumsPasses struct {
	token   chan struct{}   // one pass at a time: hashing is CPU bound
	ctx     context.Context // ended by finish
	cancel  context.CancelFunc
	running atomic.Int32
}

// sumsGrace bounds how long Close waits for sums' passes under way.
const sumsGrace = 2 * time.Second

func (p *sumsPasses) init() {
	p.token = make(chan struct{}, 1)
	p.ctx, p.cancel = context.WithCancel(context.Background())
}

// finish waits, at most grace, for the passes under way, then stops them;
// none starts after.
func (p *sumsPasses) finish(grace time.Duration) {
	deadline := time.Now().Add(grace)
	for p.running.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.cancel()
}

// startSumsLocked starts making the sums of an image just verified,
// unless that runs already.
func (img *Image) startSumsLocked(gen uint64, stamp fileStamp) {
	v := &img.hashState
	c := img.c
	if v.summing != nil || c.sums.ctx.Err() != nil {
		return
	}
	run := &verifyRun{done: make(chan struct{})}
	v.summing = run
	c.sums.running.Add(1)
	c.wg.Add(1)
	go c.sumsAfterVerdict(img, gen, stamp, run)
}

// sumsAfterVerdict makes and records the chunk sums of img, verified at
// generation gen with its data file at stamp.
func (c *Cache) sumsAfterVerdict(img *Image, gen uint64, stamp fileStamp, run *verifyRun) {
	defer c.wg.Done()
	defer c.sums.running.Add(-1)
	ctx := c.sums.ctx
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
	case c.sums.token <- struct{}{}:
		defer func() { <-c.sums.token }()
	case <-ctx.Done():
		err = ErrClosed
		return
	}
	if s, serr := c.idx.Sums(img.id); serr == nil && len(s) == img.nChunks*sha256.Size {
		return // verified again after a refetch, which these sums checked (sums.go)
	}
	lowPriority()
	lowestPriority() // nothing waits for them: behind the hasher too
	// still reports whether the sums made so far are of the verified bytes.
	still := func() bool {
		img.mu.Lock()
		defer img.mu.Unlock()
		return img.hashState.gen == gen && img.rec.Verdict == index.Verified && ctx.Err() == nil
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
