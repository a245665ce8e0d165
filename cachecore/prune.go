package cachecore

import (
	"context"
	"time"
)

// The pruner keeps usage (the data files and the index, as measured at
// the start of each pass) between the watermarks in the background, so
// that writes seldom have to evict synchronously (reserve). When usage
// (with the reservations of writes in progress) passes the high
// watermark, it evicts least recently used images until it is below the
// low one. The same loop measures the index directory and runs badger's
// value-log GC.

// indexGCInterval is how often the index's value log is garbage collected.
const indexGCInterval = 5 * time.Minute

func (c *Cache) pruneLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.PruneInterval)
	defer t.Stop()
	lastGC := c.now()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		case <-c.life.pruneKick:
		}
		c.measureIndex()
		c.life.mu.Lock()
		high := c.life.used+c.life.reserved+c.life.indexBytes.Load() > c.life.high
		c.life.mu.Unlock()
		if high {
			if d := c.pruneTo(c.life.low); len(d.Evicted) > 0 {
				c.log.Info("pruned", "images", len(d.Evicted), "bytes", d.FreedBytes, "usage", c.Usage().CacheBytes)
			}
		}
		if c.now().Sub(lastGC) >= indexGCInterval {
			c.indexGC()
			lastGC = c.now()
		}
	}
}

// kickPrune asks the pruner to look at usage now.
func (c *Cache) kickPrune() {
	select {
	case c.life.pruneKick <- struct{}{}:
	default:
	}
}

// pruneTo evicts least recently used images until usage (without the
// reservations of writes in flight) is at most target, or nothing more
// may be evicted.
func (c *Cache) pruneTo(target int64) Dropped {
	var d Dropped
	c.life.pruneMu.Lock()
	defer c.life.pruneMu.Unlock()
	for c.ctx.Err() == nil {
		// Reservations are left out: they are short-lived, and counting
		// them would evict images that the writes in flight leave room for.
		c.life.mu.Lock()
		excess := c.life.used + c.life.indexBytes.Load() - target
		var victims []*Image
		var sum int64
		if excess > 0 {
			for len(victims) < evictBatch {
				e, ok := c.life.evictable.RemoveOldest()
				if !ok {
					break
				}
				victims = append(victims, e.Value)
				sum += e.Size
				if excess -= e.Size; excess <= 0 {
					break
				}
			}
		}
		c.life.freeing += sum // writes that need room wait for these
		c.life.mu.Unlock()
		if len(victims) == 0 {
			return d
		}
		pass := c.dropData(victims)
		pass.Skipped = nil // not the pruner's concern
		d.add(pass)
		c.life.mu.Lock()
		c.life.freeing -= sum
		c.life.freed.Broadcast()
		c.life.mu.Unlock()
	}
	return d
}

// PruneNow evicts least recently used images until usage is below the low
// watermark, whether or not it has passed the high one, and says what it
// evicted.
func (c *Cache) PruneNow(ctx context.Context) (Dropped, error) {
	if err := ctx.Err(); err != nil {
		return Dropped{}, err
	}
	if c.ctx.Err() != nil {
		return Dropped{}, ErrClosed
	}
	return c.pruneTo(c.life.low), nil
}

func (c *Cache) measureIndex() {
	c.life.indexBytes.Store(c.idx.size())
}

// indexGC runs badger's value-log GC (indexroom.go).
func (c *Cache) indexGC() {
	if err := c.idx.gc(c.ctx); err != nil {
		c.log.Warn("index value-log GC", "err", err)
	}
}
