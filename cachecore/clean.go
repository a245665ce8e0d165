package cachecore

import (
	"context"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
)

// The cleaner, like Glance's: it reaps the data of images whose fetch
// stalled (partial, nobody reading or fetching them, no chunk landed for
// StallTime) and of images found invalid, on a period of StallTime/2
// (between a second and an hour). Pinned and queued images are the
// prefetcher's business and are left alone.

func (c *Cache) cleanLoop() {
	defer c.wg.Done()
	t := time.NewTicker(min(max(c.cfg.StallTime/2, time.Second), time.Hour))
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if d := c.clean(); len(d.Evicted) > 0 {
			c.log.Info("cleaner reaped stalled or invalid images", "images", len(d.Evicted), "bytes", d.FreedBytes)
		}
	}
}

// clean reaps what the cleaner reaps.
func (c *Cache) clean() Dropped {
	imgs := c.imageList()
	stall := c.cfg.StallTime
	cutoff := c.now().Add(-stall)
	var victims []*Image
	for _, img := range imgs {
		img.mu.Lock()
		if img.users == 0 && !img.retired && (img.rec.Verdict == index.Invalid ||
			stall > 0 && c.stalledLocked(img, cutoff)) {
			victims = append(victims, img)
		}
		img.mu.Unlock()
	}
	return c.dropBatches(victims)
}

// stalledLocked: img is partial, not wanted by the prefetcher, and no
// chunk of it landed since cutoff.
func (c *Cache) stalledLocked(img *Image, cutoff time.Time) bool {
	if img.present.Count() == 0 || img.present.Complete() || len(img.flights) > 0 ||
		img.rec.Pinned || !img.rec.QueuedAt.IsZero() {
		return false
	}
	last := img.rec.LastFetch
	if last.IsZero() {
		last = img.rec.LastAccess
	}
	return last.Before(cutoff)
}

// CleanNow runs the cleaner now and says what it reaped.
func (c *Cache) CleanNow(ctx context.Context) (Dropped, error) {
	if err := ctx.Err(); err != nil {
		return Dropped{}, err
	}
	if c.ctx.Err() != nil {
		return Dropped{}, ErrClosed
	}
	return c.clean(), nil
}
