package cachecore

import (
	"context"
	"slices"
	"time"

	"golang.org/x/time/rate"
)

// Prefetching: Glance's queue. Queued images, and pinned images that are
// not complete, are fetched completely by Prefetchers workers. Foreground
// reads come first: a prefetcher only takes a fetch slot when at least one
// more stays free for readers, and fetches a bounded window at a time, so
// that a reader that needs a chunk the prefetcher has claimed waits for
// little. PrefetchRate paces the workers' requests. The queue is the
// QueuedAt of the images' records: it survives restarts.

// prefetchRetry is how long an image whose prefetch failed waits before
// the next attempt.
const prefetchRetry = 30 * time.Second

// Queue queues the image called name for prefetching. Queuing an image
// that is complete or already queued does nothing.
func (c *Cache) Queue(name string) error {
	img, err := c.image("prefetch", name)
	if err != nil {
		return err
	}
	return c.QueueImage(img)
}

// QueueImage queues img for prefetching.
func (c *Cache) QueueImage(img *Image) error {
	img.mu.Lock()
	if img.retired {
		img.mu.Unlock()
		return &Error{Op: "prefetch", Name: img.entry.Name, Err: ErrNotFound}
	}
	if img.present.Complete() {
		img.mu.Unlock()
		return nil
	}
	if img.rec.QueuedAt.IsZero() {
		img.rec.QueuedAt = c.now()
		img.dirty = true
	}
	img.mu.Unlock()
	c.enqueue(img)
	c.kickFlush()
	return nil
}

// Dequeue takes the image called name off the prefetch queue (a fetch in
// progress stops after its current request). A pinned image keeps being
// fetched: unpin it to stop that. Dequeuing an image that is not queued
// does nothing.
func (c *Cache) Dequeue(name string) error {
	img, err := c.image("dequeue", name)
	if err != nil {
		return err
	}
	return c.DequeueImage(img)
}

// DequeueImage takes img off the prefetch queue.
func (c *Cache) DequeueImage(img *Image) error {
	img.mu.Lock()
	if !img.rec.QueuedAt.IsZero() {
		img.rec.QueuedAt = timeZero
		img.dirty = true
	}
	wanted := c.wantedLocked(img)
	img.mu.Unlock()
	if !wanted {
		c.life.mu.Lock()
		c.removeFromQueueLocked(img)
		c.life.mu.Unlock()
	}
	c.kickFlush()
	return nil
}

var timeZero time.Time

// Queued lists the names of the images waiting to be prefetched or being
// prefetched, queued and pinned ones, in queue order.
func (c *Cache) Queued() []string {
	c.life.mu.Lock()
	defer c.life.mu.Unlock()
	names := make([]string, len(c.life.queue))
	for i, img := range c.life.queue {
		names[i] = img.entry.Name
	}
	return names
}

// Queued reports whether img is queued for prefetching.
func (img *Image) Queued() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return !img.rec.QueuedAt.IsZero()
}

// wantedLocked: img should be fetched completely in the background.
func (c *Cache) wantedLocked(img *Image) bool {
	return !img.retired && (img.rec.Pinned || !img.rec.QueuedAt.IsZero()) && !img.present.Complete()
}

// loadQueue rebuilds the queue from the records at start-up: pinned
// images first, then queued ones in the order they were queued.
func (c *Cache) loadQueue() {
	var q []*Image
	for _, img := range c.images {
		if c.wantedLocked(img) {
			q = append(q, img)
		} else if !img.rec.QueuedAt.IsZero() { // complete: it left the queue
			img.rec.QueuedAt = timeZero
			img.dirty = true
		}
	}
	slices.SortFunc(q, func(a, b *Image) int { return a.rec.QueuedAt.Compare(b.rec.QueuedAt) })
	for _, img := range q {
		c.life.queue = append(c.life.queue, img)
		c.life.inQueue[img] = true
	}
}

func (c *Cache) enqueue(img *Image) {
	c.life.mu.Lock()
	if !c.life.inQueue[img] {
		c.life.queue = append(c.life.queue, img)
		c.life.inQueue[img] = true
	}
	delete(c.life.notBefore, img)
	c.life.mu.Unlock()
	c.kickPrefetch()
}

func (c *Cache) removeFromQueueLocked(img *Image) {
	if !c.life.inQueue[img] {
		return
	}
	delete(c.life.inQueue, img)
	delete(c.life.notBefore, img)
	c.life.queue = slices.DeleteFunc(c.life.queue, func(x *Image) bool { return x == img })
}

func (c *Cache) kickPrefetch() {
	select {
	case c.life.prefetchKick <- struct{}{}:
	default:
	}
}

func (c *Cache) startPrefetchers() {
	for range max(c.cfg.Prefetchers, 0) {
		c.wg.Add(1)
		go c.prefetchLoop()
	}
}

func (c *Cache) prefetchLoop() {
	defer c.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if img := c.nextPrefetch(); img != nil {
			err := c.prefetch(img)
			c.prefetchDone(img, err)
			continue
		}
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.life.prefetchKick:
		}
	}
}

// nextPrefetch takes the first image of the queue that nobody works on
// and that is not waiting to retry.
func (c *Cache) nextPrefetch() *Image {
	now := c.now()
	c.life.mu.Lock()
	defer c.life.mu.Unlock()
	for _, img := range c.life.queue {
		if c.life.active[img] || now.Before(c.life.notBefore[img]) {
			continue
		}
		c.life.active[img] = true
		return img
	}
	return nil
}

// prefetchDone takes img off the queue if it is complete (or no longer
// wanted); after a failure it waits prefetchRetry before the next try.
// The kernel may keep the attributes of an image nobody has open for
// long, st_blocks of before the prefetch: it is told.
func (c *Cache) prefetchDone(img *Image, err error) {
	img.mu.Lock()
	names := img.names()
	wanted := c.wantedLocked(img)
	if !wanted && !img.rec.QueuedAt.IsZero() {
		img.rec.QueuedAt = timeZero
		img.dirty = true
	}
	img.mu.Unlock()
	c.cfg.Notifier.CachedChanged(names)
	c.life.mu.Lock()
	delete(c.life.active, img)
	if !wanted {
		c.removeFromQueueLocked(img)
	} else if err != nil {
		c.life.notBefore[img] = c.now().Add(prefetchRetry)
	}
	c.life.mu.Unlock()
	if err != nil && c.ctx.Err() == nil {
		c.log.Warn("prefetch failed; will retry", "image", img.entry.Name, "err", err, "retry_in", prefetchRetry)
	}
	if !wanted {
		c.kickFlush()
	}
	c.kickPrefetch() // another worker may take what this one skipped
}

// prefetch fetches what is missing of img, a window at a time. It holds
// the image open meanwhile, so that the pruner leaves it alone.
func (c *Cache) prefetch(img *Image) error {
	img.mu.Lock()
	if !c.wantedLocked(img) {
		img.mu.Unlock()
		return nil
	}
	if err := img.acquireLocked(); err != nil {
		img.mu.Unlock()
		return err
	}
	c.inUseLocked(img)
	file := img.file
	img.mu.Unlock()
	defer img.release()

	window := maxRunChunks
	if p := c.life.pacer; p != nil { // about a second's worth per request
		window = int(max(1, min(int64(maxRunChunks), int64(p.Limit())/img.chunkSize)))
	}
	for next := 0; next < img.nChunks; {
		img.mu.Lock()
		wanted := c.wantedLocked(img)
		next = img.present.NextMissing(next, img.nChunks)
		img.mu.Unlock()
		if !wanted || next >= img.nChunks {
			break
		}
		to := min(next+window, img.nChunks)
		if p := c.life.pacer; p != nil {
			if err := pace(c.ctx, p, int64(to-next)*img.chunkSize); err != nil {
				return ErrClosed
			}
		}
		if err := c.prefetchSlot(img); err != nil {
			return err
		}
		img.mu.Lock()
		runs := img.claimLocked(next, to, nil, 1)
		if len(runs) > 0 {
			img.users++
		}
		img.mu.Unlock()
		if len(runs) == 0 { // in flight for someone else: on to the next window
			c.slots.release(img)
			next = to
			continue
		}
		r := &runs[0]
		c.wg.Add(1)
		c.fetchRun(img, file, r, false) // gives the slot back
		if err := r.failed(); err != nil {
			return err
		}
		next = r.end
	}
	// Chunks others were fetching: wait for them (and fetch any whose
	// fetch failed).
	if !img.Pinned() && !img.Queued() {
		return nil
	}
	return img.ensure(c.ctx, 0, img.nChunks-1)
}

// prefetchSlot takes a fetch slot for img, but only while at least one
// more stays free for foreground reads.
func (c *Cache) prefetchSlot(img *Image) error {
	for {
		freed := c.slots.released()
		if c.slots.tryAcquire(img, 1) {
			return nil
		}
		select {
		case <-c.ctx.Done():
			return ErrClosed
		case <-freed:
		}
	}
}

// newPacer bounds the prefetchers' bandwidth to bytesPerSec: a token
// bucket of one second's worth, which starts empty, so that even the
// first window waits for its bytes and a prefetch averages the rate asked
// from its start.
func newPacer(bytesPerSec int64) *rate.Limiter {
	burst := int(max(1, bytesPerSec))
	p := rate.NewLimiter(rate.Limit(bytesPerSec), burst)
	p.AllowN(time.Now(), burst)
	return p
}

// pace waits until n more bytes may be fetched (in pieces of at most the
// bucket's size, which a window of large chunks may exceed).
func pace(ctx context.Context, p *rate.Limiter, n int64) error {
	for n > 0 {
		k := min(n, int64(p.Burst()))
		if err := p.WaitN(ctx, int(k)); err != nil {
			return err
		}
		n -= k
	}
	return nil
}
