package cachecore

import (
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Retired images. A mirror's clients may hold an older index than the
// mirror's (upstream.Retainer: simplestreams), so an image that leaves
// such an upstream's catalog stays listed while it is cached whole and
// verified, under the names no listed entry takes, marked with the time
// it left (Record.RetiredAt, user.imgcache.retired). It is not pinned,
// so the LRU evicts it in time, and its eviction takes it out of the
// catalog. A partial image leaves at once, as any image does: a read of
// an uncached part would go to a server that no longer lists it. So does
// a Content image: a catalog file of a catalog that is gone.

// retainsRemoved says whether the upstream keeps its images valid after
// they leave its catalog.
func (c *Cache) retainsRemoved() bool {
	r, ok := c.up.(upstream.Retainer)
	return ok && r.RetainsRemoved()
}

// keepRetiredLocked decides whether img, left out of the listing just
// published, stays in the catalog as retired, and marks it so. c.mu is
// held.
func (c *Cache) keepRetiredLocked(img *Image, now time.Time) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.rec.Content || !img.trustedLocked() || img.nChunks == 0 {
		return false
	}
	x := img.rec.Extras()
	if !x.RetiredAt.IsZero() {
		return true
	}
	x.RetiredAt = now
	img.rec.SetExtras(x)
	img.rec.Pinned = false // a pin is for what the upstream offers
	img.dirty = true
	if img.users == 0 && img.life.alloc > 0 {
		c.life.space.Evictable(img.id, img, img.life.alloc)
	}
	c.log.Info("image left the catalog; listed as retired while cached", "image", img.rec.Name)
	return true
}

// unlistEvicted takes retired images whose data was just dropped out of
// the catalog: nothing of them is left to read. It runs in a goroutine of
// its own (dropData), with no lock held.
func (c *Cache) unlistEvicted(imgs []*Image) {
	c.mu.Lock()
	var gone []*Image
	for _, img := range imgs {
		img.mu.Lock()
		out := c.images[img.id] == img && !img.rec.Extras().RetiredAt.IsZero() && img.present.Count() == 0
		img.mu.Unlock()
		if out {
			gone = append(gone, img)
		}
	}
	if len(gone) == 0 {
		c.mu.Unlock()
		return
	}
	old := c.tree.Load()
	c.unlistLocked(gone)
	t, unplaced := c.buildTree()
	gone = append(gone, c.unlistLocked(unplaced)...)
	c.tree.Store(t)
	c.mu.Unlock()
	for _, img := range gone {
		c.retire(img)
	}
	if changes := diffTrees(old, t); len(changes) > 0 {
		c.cfg.Notifier.CatalogChanged(changes)
	}
}
