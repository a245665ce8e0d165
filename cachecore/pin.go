package cachecore

// Pinning. A pinned image is never evicted (only an explicit Evict of a
// pinned image is refused) and is fetched completely in the background by
// the prefetchers; the pin is part of the image's record, so it survives
// restarts.

// Pin pins (on) or unpins the image called name.
func (c *Cache) Pin(name string, on bool) error {
	img, err := c.image("pin", name)
	if err != nil {
		return err
	}
	return c.PinImage(img, on)
}

// PinImage pins or unpins img.
func (c *Cache) PinImage(img *Image, on bool) error {
	img.mu.Lock()
	if img.retired {
		img.mu.Unlock()
		return &Error{Op: "pin", Name: img.entry.Name, Err: ErrNotFound}
	}
	if img.rec.Pinned != on {
		img.rec.Pinned = on
		img.dirty = true
	}
	incomplete := !img.present.Complete()
	if on {
		c.life.space.Keep(img.id)
	} else if img.users == 0 && img.life.alloc > 0 && !img.rec.Content {
		c.life.space.Evictable(img.id, img, img.life.alloc)
	}
	img.mu.Unlock()
	if on && incomplete {
		c.enqueue(img)
	}
	c.kickFlush()
	return nil
}

// Pinned reports whether img is pinned.
func (img *Image) Pinned() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.rec.Pinned
}
