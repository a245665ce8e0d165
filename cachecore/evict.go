package cachecore

import (
	"errors"

	"github.com/imgcache/imgcache/cachecore/lru"
)

// Eviction drops an image's cached data: its chunk map is emptied (in
// memory and in the index) and its data file deleted. The image stays in
// the catalog in state absent; the next read faults it in again. An image
// that is open (its data must stay readable until close) is never evicted,
// nor is a pinned one, except by an explicit Evict.

var (
	// ErrBusy: the image is open, so its data cannot be dropped now.
	ErrBusy = errors.New("image is open")
	// ErrPinned: the image is pinned; unpin it first.
	ErrPinned = errors.New("image is pinned")
)

func imagesOf(es []lru.Entry[string, *Image]) []*Image {
	imgs := make([]*Image, len(es))
	for i, e := range es {
		imgs[i] = e.Value
	}
	return imgs
}

// dropData evicts the images that are unused (and unpinned, unless
// withPinned) and returns the bytes freed and how many it evicted.
//
// Data after metadata, the reverse of a write: the empty chunk maps are
// written to the index first, then the files are deleted. indexMu keeps a
// flush that snapshotted a map before the eviction from writing it after
// (the image's gen tells the flusher its snapshot is stale). If the image
// is opened again between the two steps, its file is kept: new chunks may
// already be landing in it, and nothing unmarked is ever read.
func (c *Cache) dropData(imgs []*Image, withPinned bool) (freed int64, n int) {
	c.life.indexMu.Lock()
	var b batch
	dropped := make([]*Image, 0, len(imgs))
	for _, img := range imgs {
		img.mu.Lock()
		if img.users > 0 || img.retired || (img.rec.Pinned && !withPinned) {
			img.mu.Unlock()
			continue
		}
		img.present.clear()
		if img.rec.Verdict == invalid { // its bad bytes are gone; LastError keeps the story
			img.rec.Verdict = unchecked
		}
		img.life.gen++
		img.dirty, img.unsynced = false, false
		b.records = append(b.records, img.rec)
		b.putMap(img.id, img.present.marshal())
		dropped = append(dropped, img)
		img.mu.Unlock()
	}
	err := c.idx.write(&b)
	c.life.indexMu.Unlock()
	if err != nil {
		// The index may still say the chunks are there: keep the files
		// (the maps are empty in memory, so nobody reads them) and let
		// the flusher write the maps again.
		c.log.Warn("evicting: writing index", "err", err)
		for _, img := range dropped {
			img.mu.Lock()
			img.dirty = true
			img.mu.Unlock()
		}
		return 0, 0
	}
	for _, img := range dropped {
		img.mu.Lock()
		if img.users == 0 && img.present.count == 0 {
			if err := c.store.remove(img.id); err != nil {
				c.log.Warn("evicting: removing cache file", "image", img.entry.Name, "err", err)
			} else {
				freed += img.life.alloc
				c.setAllocLocked(img, 0)
			}
		}
		c.life.mu.Lock()
		if img.users == 0 && img.life.alloc == 0 {
			c.life.evictable.Remove(img.id)
		}
		c.life.mu.Unlock()
		img.mu.Unlock()
		n++
	}
	c.stats.Evictions.Add(uint64(n))
	if n > 0 {
		c.log.Debug("evicted", "images", n, "bytes", freed)
	}
	return freed, n
}

// image finds the current image of that name.
func (c *Cache) image(op, name string) (*Image, error) {
	e, ok := c.Lookup(name)
	if !ok || e.Image == nil {
		return nil, &Error{Op: op, Name: name, Err: ErrNotFound}
	}
	return e.Image, nil
}

// Evict drops the cached data of the image called name. It fails with
// ErrNotFound for an unknown name, ErrBusy if the image is open and
// ErrPinned if it is pinned; evicting an absent image is no error.
func (c *Cache) Evict(name string) error {
	img, err := c.image("evict", name)
	if err != nil {
		return err
	}
	img.mu.Lock()
	users, pinned := img.users, img.rec.Pinned
	img.mu.Unlock()
	switch {
	case pinned:
		return &Error{Op: "evict", Name: name, Err: ErrPinned}
	case users > 0:
		return &Error{Op: "evict", Name: name, Err: ErrBusy}
	}
	if _, n := c.dropData([]*Image{img}, false); n == 0 {
		return &Error{Op: "evict", Name: name, Err: ErrBusy} // opened or pinned meanwhile
	}
	return nil
}

// EvictAll drops the cached data of every image that is neither open nor
// pinned, and returns how many images had data to drop.
func (c *Cache) EvictAll() (int, error) {
	var imgs []*Image
	c.mu.Lock()
	for _, img := range c.images {
		imgs = append(imgs, img)
	}
	c.mu.Unlock()
	var withData []*Image
	for _, img := range imgs {
		img.mu.Lock()
		if img.present.count > 0 || img.life.alloc > 0 {
			withData = append(withData, img)
		}
		img.mu.Unlock()
	}
	total := 0
	for len(withData) > 0 {
		k := min(len(withData), evictBatch)
		_, n := c.dropData(withData[:k], false)
		total += n
		withData = withData[k:]
	}
	return total, nil
}

// evictBatch bounds how many images one dropData handles, so that
// indexMu is not held for long.
const evictBatch = 1024
