package cachecore

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
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
	// ErrCatalogFile: the image is a file of the catalog (Content): it
	// is kept while it is listed. It is an ErrPinned.
	ErrCatalogFile = fmt.Errorf("%w as a file of the catalog, kept while it is listed", ErrPinned)
)

// Dropped says what an eviction, a prune or a clean dropped.
type Dropped struct {
	Evicted    []string // names of the images whose cached data was dropped
	Skipped    []string // names of the images kept because they are open or pinned
	FreedBytes int64    // disk space freed (allocated blocks)
}

func (d *Dropped) add(o Dropped) {
	d.Evicted = append(d.Evicted, o.Evicted...)
	d.Skipped = append(d.Skipped, o.Skipped...)
	d.FreedBytes += o.FreedBytes
}

// dropData evicts the images that are neither open nor pinned.
//
// Data after metadata, the reverse of a write: the empty chunk maps are
// written to the index first, then the files are deleted. indexMu keeps a
// flush that snapshotted a map before the eviction from writing it after
// (the image's gen tells the flusher its snapshot is stale). If the image
// is opened again between the two steps, its file is kept: new chunks may
// already be landing in it, and nothing unmarked is ever read.
func (c *Cache) dropData(imgs []*Image) Dropped {
	var d Dropped
	c.life.indexMu.Lock()
	var b index.Batch
	dropped := make([]*Image, 0, len(imgs))
	for _, img := range imgs {
		img.mu.Lock()
		if img.retired {
			img.mu.Unlock()
			continue
		}
		if img.users > 0 || img.rec.Pinned || img.rec.Content {
			d.Skipped = append(d.Skipped, img.entry.Name)
			img.mu.Unlock()
			continue
		}
		img.present.Clear()
		img.hashState.resetLocked()
		if img.rec.Verdict == index.Invalid { // its bad bytes are gone; LastError keeps the story
			img.rec.Verdict = index.Unchecked
		}
		img.life.gen++
		img.dirty, img.unsynced = false, false
		b.Records = append(b.Records, img.rec)
		b.PutMap(img.id, img.present.Marshal())
		dropped = append(dropped, img)
		img.mu.Unlock()
	}
	err := c.idx.Write(&b)
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
		return d
	}
	var retired []*Image
	var told []string // every name of each: the kernel may know the inode by any
	for _, img := range dropped {
		img.mu.Lock()
		if !img.rec.Extras().RetiredAt.IsZero() {
			retired = append(retired, img)
		}
		if img.users == 0 && img.present.Count() == 0 {
			if err := c.store.Remove(img.id); err != nil {
				c.log.Warn("evicting: removing cache file", "image", img.entry.Name, "err", err)
			} else {
				d.FreedBytes += img.life.alloc
				c.setAllocLocked(img, 0)
			}
		}
		if img.users == 0 && img.life.alloc == 0 {
			c.life.space.Keep(img.id)
		}
		d.Evicted = append(d.Evicted, img.rec.Name)
		told = append(told, img.names()...)
		img.mu.Unlock()
	}
	c.stats.Evictions.Add(uint64(len(d.Evicted)))
	if len(told) > 0 {
		c.cfg.Notifier.CachedChanged(told)
	}
	if len(d.Evicted) > 0 {
		c.log.Debug("evicted", "images", len(d.Evicted), "bytes", d.FreedBytes)
	}
	if len(retired) > 0 {
		// Not here: an eviction may be inside a read, and this builds
		// the tree anew and tells the kernel.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.unlistEvicted(retired) // catalog_retain.go
		}()
	}
	return d
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
func (c *Cache) Evict(name string) (Dropped, error) {
	img, err := c.image("evict", name)
	if err != nil {
		return Dropped{}, err
	}
	img.mu.Lock()
	pinned, content := img.rec.Pinned, img.rec.Content
	img.mu.Unlock()
	if pinned {
		return Dropped{}, &Error{Op: "evict", Name: name, Err: ErrPinned}
	}
	if content {
		return Dropped{}, &Error{Op: "evict", Name: name, Err: ErrCatalogFile}
	}
	// A fetch lets go of the image just after its last chunk lands, so
	// an evict right after a read (cat, then imgcache evict) may find it
	// still in use: it tries again for a moment before saying it is open.
	deadline := time.Now().Add(evictBusyWait)
	for {
		d := c.dropData([]*Image{img})
		if len(d.Evicted) > 0 {
			return d, nil
		}
		if !img.InUse() || time.Now().After(deadline) || c.ctx.Err() != nil { // open (or pinned meanwhile)
			return d, &Error{Op: "evict", Name: name, Err: ErrBusy}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// evictBusyWait is how long Evict waits for an image in use to be let go.
const evictBusyWait = 500 * time.Millisecond

// EvictAll drops the cached data of every image that is neither open nor
// pinned. Skipped names the images with data that it kept.
func (c *Cache) EvictAll() (Dropped, error) {
	imgs := c.imageList()
	var withData []*Image
	for _, img := range imgs {
		img.mu.Lock()
		if img.present.Count() > 0 || img.life.alloc > 0 {
			withData = append(withData, img)
		}
		img.mu.Unlock()
	}
	d := c.dropBatches(withData)
	// As Evict does, a moment for fetches that let go of an image just
	// after its last chunk landed (a read, then evict --all).
	deadline := time.Now().Add(evictBusyWait)
	for len(d.Skipped) > 0 && c.ctx.Err() == nil {
		var busy []*Image
		for _, img := range withData {
			img.mu.Lock()
			if img.users > 0 && !img.rec.Pinned && !img.rec.Content && img.present.Count() > 0 {
				busy = append(busy, img)
			}
			img.mu.Unlock()
		}
		if len(busy) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
		tried := make(map[string]bool, len(busy))
		for _, img := range busy {
			tried[img.Name()] = true
		}
		more := c.dropBatches(busy)
		d.Evicted = append(d.Evicted, more.Evicted...)
		d.FreedBytes += more.FreedBytes
		d.Skipped = append(slices.DeleteFunc(d.Skipped, func(name string) bool { return tried[name] }), more.Skipped...)
	}
	return d, nil
}

// dropBatches drops imgs evictBatch at a time.
func (c *Cache) dropBatches(imgs []*Image) Dropped {
	var d Dropped
	for len(imgs) > 0 {
		k := min(len(imgs), evictBatch)
		d.add(c.dropData(imgs[:k]))
		imgs = imgs[k:]
	}
	return d
}

// evictBatch bounds how many images one dropData handles, so that
// indexMu is not held for long.
const evictBatch = 1024
