package cachecore

import (
	"errors"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
)

// flushLoop writes index changes every FlushInterval, or sooner when
// kicked, and once more when the cache closes (in Close).
func (c *Cache) flushLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.checkStorage() // storage.go
		case <-c.kick:
		}
		if err := c.flush(); err != nil && !errors.Is(err, ErrIndexHeld) { // the index said why, once
			c.log.Warn("writing index", "err", err)
		}
		c.measureIndex() // it counts against the size limit (usage.go)
	}
}

// kickFlush asks the flusher to run soon.
func (c *Cache) kickFlush() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// flush writes the records and chunk maps that changed since the last
// flush, in one batch. Data before metadata: a chunk map is taken first,
// then the data file is synced, then the map is written, so the index
// never says a chunk is present that a crash could lose. A snapshot of an
// image whose data was dropped meanwhile (its gen moved on) is stale and
// is not written: the eviction wrote the image's empty map itself; nor is
// one of an image retired meanwhile, whose record is being deleted.
func (c *Cache) flush() error {
	if c.storageLost() != nil {
		return nil // nothing can be synced or recorded (storage.go)
	}
	imgs := c.imageList()

	type snapshot struct {
		img     *Image
		gen     uint64
		rec     index.Record
		present []byte
	}
	var snaps []snapshot
	for _, img := range imgs {
		img.mu.Lock()
		if !img.dirty || img.retired {
			img.mu.Unlock()
			continue
		}
		img.dirty = false
		s := snapshot{img: img, gen: img.life.gen, rec: img.rec, present: img.present.Marshal()}
		unsynced := img.unsynced
		img.unsynced = false
		img.mu.Unlock()

		if unsynced {
			if err := c.store.Sync(img.id); err != nil {
				img.mu.Lock()
				if img.life.gen == s.gen { // else evicted: nothing left to sync
					c.log.Warn("syncing cache file; its new chunks stay unrecorded", "image", s.rec.Name, "err", err)
					img.dirty, img.unsynced = true, true
				}
				img.mu.Unlock()
				continue
			}
		}
		snaps = append(snaps, s)
	}

	c.life.indexMu.Lock()
	defer c.life.indexMu.Unlock()
	var b index.Batch
	for _, s := range snaps {
		s.img.mu.Lock()
		// A retired image's record is deleted (deleteImage, under
		// indexMu too): a snapshot taken before must not bring it back.
		stale := s.img.life.gen != s.gen || s.img.retired
		s.img.mu.Unlock()
		if !stale {
			b.Records = append(b.Records, s.rec)
			b.PutMap(s.img.id, s.present)
		}
	}
	return c.idx.Write(&b)
}
