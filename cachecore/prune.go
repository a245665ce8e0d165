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
		high := c.life.space.OverHigh()
		if high {
			if d := c.pruneTo(c.life.space.Low()); len(d.Evicted) > 0 {
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
// may be evicted. The ledger shares the evictions with reserve's.
func (c *Cache) pruneTo(target int64) Dropped {
	var d Dropped
	c.life.pruneMu.Lock()
	defer c.life.pruneMu.Unlock()
	c.life.space.Prune(target, evictBatch, func(victims []*Image) {
		pass := c.dropData(victims)
		pass.Skipped = nil // not the pruner's concern
		d.add(pass)
	}, func() bool { return c.ctx.Err() != nil })
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
	return c.pruneTo(c.life.space.Low()), nil
}

func (c *Cache) measureIndex() {
	c.life.space.SetIndex(c.idx.Size())
}

// indexGC runs badger's value-log GC (index/room.go).
func (c *Cache) indexGC() {
	if err := c.idx.GC(c.ctx); err != nil {
		c.log.Warn("index value-log GC", "err", err)
	}
}
