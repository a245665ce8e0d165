package cachecore

import "github.com/imgcache/imgcache/cachecore/index"

// Pinning. A pinned image is never evicted (only an explicit Evict of a
// pinned image is refused) and is fetched completely in the background by
// the prefetchers, within the size limit: when pinned images alone fill
// it, their fetches meet ErrNoRoom and retry later. Which images are
// pinned is the pin rules' choice (pins.go); the pin is part of the
// image's record, so it survives restarts and holds offline.

// setPinned pins (on) or unpins img, adding its record to b if not nil
// (the flusher writes it too). Cache.mu is held.
func (c *Cache) setPinned(img *Image, on bool, b *index.Batch) {
	img.mu.Lock()
	if img.rec.Pinned != on {
		img.rec.Pinned = on
		img.dirty = true
		if b != nil && !img.retired {
			b.Records = append(b.Records, img.rec)
		}
	}
	incomplete := !img.present.Complete()
	if on {
		c.life.space.Keep(img.id)
	} else if img.users == 0 && img.life.alloc > 0 && !img.rec.Content && !img.retired {
		c.life.space.Evictable(img.id, img, img.life.alloc)
	}
	retired := img.retired
	img.mu.Unlock()
	if on && incomplete && !retired {
		c.enqueue(img)
	}
}

// Pinned reports whether img is pinned.
func (img *Image) Pinned() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.rec.Pinned
}

// pinCandidate says whether a pin rule may select img: not an image that
// left the upstream's catalog (retired, listed while cached), which is
// not pinned (catalog_retain.go); and its attributes, which a pin by glob
// or alias reads (products, versions, aliases).
func (img *Image) pinCandidate() (attrs map[string]string, ok bool) {
	img.mu.Lock()
	defer img.mu.Unlock()
	x := img.rec.Extras()
	return x.Attrs.Map(), x.RetiredAt.IsZero() && !img.retired
}
