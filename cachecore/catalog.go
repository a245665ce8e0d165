package cachecore

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// catalogLoop refreshes the catalog every CatalogTTL. After a failure it
// retries sooner, backing off up to the TTL; a failure never drops what
// the catalog had. soon asks for a first refresh right away.
func (c *Cache) catalogLoop(soon bool) {
	defer c.wg.Done()
	retry := time.Second
	wait := c.cfg.CatalogTTL
	if soon || c.listFailed() {
		wait = 0
	}
	for first := true; ; first = false {
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-c.relist:
			t.Stop()
		}
		ctx, cancel := context.WithTimeout(c.ctx, max(c.cfg.CatalogTTL, time.Minute))
		err := c.refresh(ctx)
		cancel()
		if err == nil || first { // the first: after start-up's garbage
			c.releaseMemory(c.ImageCount())
		}
		if err == nil {
			retry, wait = time.Second, c.cfg.CatalogTTL
			continue
		}
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("catalog refresh failed; keeping the catalog as it was", "err", err, "retry_in", retry)
		wait, retry = catalogRetryPause(retry, err), min(2*retry, c.cfg.CatalogTTL)
	}
}

// largeCatalog is how many images (or entries of a listing) make a
// refresh leave enough garbage behind to be worth returning at once
// (releaseMemory).
const largeCatalog = 100_000

// releaseMemory collects the garbage of a large catalog's start-up or
// refresh (a listing of a million entries and its grouping are hundreds
// of MB) and returns it to the kernel: a daemon at rest allocates too
// little for the collector to run soon, and it stayed at its peak (756
// MiB for a million images, of which about 200 were live).
func (c *Cache) releaseMemory(n int) {
	if n >= largeCatalog {
		debug.FreeOSMemory()
	}
}

// refreshSoon asks for a catalog refresh now: a fetch found that an
// image changed upstream, so new opens should get its new version.
func (c *Cache) refreshSoon() {
	select {
	case c.relist <- struct{}{}:
	default:
	}
}

func (c *Cache) listFailed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.listErr != nil
}

// refresh lists the upstream and makes the result the catalog: new images
// get records (nothing cached yet; Content stored whole), images no
// longer listed are retired (deleted once no one uses them) or, for an
// upstream that retains them, kept while cached, and the kernel is told
// what changed. A listing whose Content cannot be stored is refused as a
// failed listing is: the catalog stays as it was.
func (c *Cache) refresh(ctx context.Context) error {
	entries, err := c.up.List(ctx)
	if err != nil {
		c.refreshFailed(err)
		return err
	}
	c.releaseMemory(len(entries)) // the listing's own garbage, before grouping it makes more
	entries = c.acceptable(entries)
	in := c.group(entries)
	for {
		puts, err := c.storeContent(entries, in)
		if err != nil {
			c.log.Warn("catalog refused: a file of it cannot be stored", "err", err)
			c.refreshFailed(err)
			return err
		}
		wait := c.publish(entries, in, puts)
		if wait == nil {
			return nil
		}
		c.dropStored(in, puts) // an ID of the listing was being deleted: again, after it
		<-wait
	}
}

// refreshFailed records a refresh that failed; the catalog stays.
func (c *Cache) refreshFailed(err error) {
	now := c.now()
	c.mu.Lock()
	c.listErr, c.listErrAt = err, now
	var stale *index.CatalogMeta
	if c.catalog.StaleSince.IsZero() {
		c.catalog.StaleSince = now
		stale = &index.CatalogMeta{}
		*stale = c.catalog
	}
	c.mu.Unlock()
	if stale != nil {
		if werr := c.idx.Write(&index.Batch{Catalog: stale}); werr != nil {
			c.log.Warn("saving catalog", "err", werr)
		}
	}
}

// publish makes the grouped listing the catalog, in one tree swap. It
// returns a channel to wait on, and does nothing, if an ID of the
// listing is being deleted (deleteImage): its record and file would go
// after the new image's were made.
func (c *Cache) publish(entries []upstream.Entry, in []intake, puts map[int32]*stored) (wait <-chan struct{}) {
	warnings := c.upstreamWarnings()
	now := c.now()
	c.mu.Lock()
	if wait := c.deletionOfLocked(in); wait != nil {
		c.mu.Unlock()
		return wait
	}
	c.listErr = nil
	c.gen++
	var b index.Batch
	var renamed []*Image // images whose names changed: their link counts too
	old := c.tree.Load()
	cold := c.cold
	listedCold := make([]bool, len(cold.imgs))
	var newCold []coldImage
	if len(cold.imgs) == 0 && len(c.images) == 0 {
		// A first listing: nearly every image is new and cold, and the
		// slice becomes the cold set (coldSet.next), so room for all.
		newCold = make([]coldImage, 0, len(in))
	}
	coldNext := 0  // where the next cold image of the listing likely is (listedColdLocked)
	moved := false // an image of the catalog came, went or changed its place in the tree
	for gi := range in {
		g := &in[gi]
		img := c.imageOfKeyLocked(&g.key)
		if img == nil && len(c.lingering) > 0 {
			img = c.reviveLocked(g.id())
			moved = moved || img != nil
		}
		if img == nil {
			if ci, ok := c.listedColdLocked(g, entries, puts[int32(gi)] != nil, listedCold, &coldNext); ok {
				continue // as it was: still cold
			} else if ci >= 0 {
				img = c.heatLocked(ci) // it changes: an Image of it takes the change
				moved = true           // the tree's entry says what it was (known.Entry)
			}
		}
		if img == nil {
			moved = true // a new image
		}
		switch {
		case img == nil:
			s := puts[int32(gi)]
			r := c.record(g, entries, g.id())
			if ci, ok := coldOf(&r); ok && s == nil {
				newCold = append(newCold, ci) // its record is written from it (coldRecords)
				continue
			}
			img = c.newListed(r, s)
			c.images[img.id] = img
			b.Records = append(b.Records, img.rec)
			if s != nil {
				b.PutMap(img.id, img.present.Marshal())
				if b.Sums == nil {
					b.Sums = make(map[string][]byte)
				}
				b.Sums[img.id] = s.sums
			}
		default:
			changed, placed := c.update(img, g, entries)
			if changed {
				renamed = append(renamed, img)
			}
			moved = moved || placed
		}
		img.seen = c.gen
	}
	retired, retiring := c.unlistedLocked(now)
	c.cold = cold.next(listedCold, newCold, &b)
	moved = moved || retiring || c.cold != cold
	if len(newCold) > 0 {
		b.More = coldRecords(newCold)
	}
	c.catalog = index.CatalogMeta{RefreshedAt: now, Source: c.up.URL("")}
	c.warnings = warnings
	meta := c.catalog // a copy: the batch is written outside the lock
	b.Catalog = &meta
	t := old
	if moved || old == nil {
		var unplaced []*Image
		t, unplaced = c.buildTree()
		retired = append(retired, c.unlistLocked(unplaced)...)
	}
	c.applyPinsLocked(entries, t, &b) // before anyone sees a new version unpinned (pins.go)
	c.tree.Store(t)
	c.mu.Unlock()

	if err := c.idx.Write(&b); err != nil {
		c.log.Warn("saving catalog", "err", err)
	}
	for _, img := range retired {
		c.retire(img)
	}
	var changes []Change
	if t != old {
		changes = diffTrees(old, t)
	}
	for _, img := range renamed { // the link count shows through every name
		for _, name := range img.names() {
			changes = append(changes, Change{Dir: parentPath(name), Name: baseName(name)})
		}
	}
	if len(changes) > 0 {
		c.log.Info("catalog changed", "entries", len(entries), "changes", len(changes))
		c.cfg.Notifier.CatalogChanged(changes)
	}
	if len(renamed) > 0 {
		c.kickFlush()
	}
	return nil
}

// unlistedLocked deals with the images the listing just published left
// out (their seen is old): kept, as retired, if the upstream retains
// them (catalog_retain.go), else taken out of the catalog and returned,
// to be retired. retiring says whether an image was retired now (kept
// or not). c.mu is held.
func (c *Cache) unlistedLocked(now time.Time) (out []*Image, retiring bool) {
	retain := c.retainsRemoved()
	for _, img := range c.images {
		if img.seen == c.gen {
			continue
		}
		if retain {
			was := !img.rec.Extras().RetiredAt.IsZero() // c.mu held: see update
			if c.keepRetiredLocked(img, now) {
				retiring = retiring || !was
				continue
			}
		}
		out = append(out, img)
	}
	return c.unlistLocked(out), retiring || len(out) > 0
}

// unlistLocked takes imgs out of the catalog; they linger until they are
// deleted, so that a listing that names them again while they are still
// in use gets them back (reviveLocked). c.mu is held.
func (c *Cache) unlistLocked(imgs []*Image) []*Image {
	for _, img := range imgs {
		delete(c.images, img.id)
		c.lingering[img.id] = img
	}
	return imgs
}

// imageOfKeyLocked is the hot image of the catalog with ID key, nil if
// there is none. c.mu is held.
func (c *Cache) imageOfKeyLocked(key *imageKey) *Image {
	h := key.hexBytes()
	return c.images[string(h[:])]
}

// reviveLocked puts back into the catalog the image id that left it but
// is still in use (not yet deleted), nil if there is none. c.mu is held.
func (c *Cache) reviveLocked(id string) *Image {
	img := c.lingering[id]
	if img == nil {
		return nil
	}
	delete(c.lingering, id)
	c.images[id] = img
	img.mu.Lock()
	img.retired, img.rec.Listed, img.dirty = false, true, true
	img.mu.Unlock()
	return img
}

// deletionOfLocked returns the end of a deletion in progress of an ID of
// in, nil if there is none. c.mu is held.
func (c *Cache) deletionOfLocked(in []intake) <-chan struct{} {
	if len(c.deleting) == 0 {
		return nil
	}
	for gi := range in {
		h := in[gi].key.hexBytes()
		if done := c.deleting[string(h[:])]; done != nil {
			return done
		}
	}
	return nil
}

// upstreamWarnings is what the upstream left out of its last listing
// (upstream.Warner), at most maxWarnings lines and a count of the rest.
func (c *Cache) upstreamWarnings() []string {
	w, ok := c.up.(upstream.Warner)
	if !ok {
		return nil
	}
	lines := w.Warnings()
	out := slices.Clone(lines[:min(len(lines), maxWarnings)])
	if len(lines) > maxWarnings {
		out = append(out, fmt.Sprintf("and %d more", len(lines)-maxWarnings))
	}
	return out
}

// maxWarnings bounds the upstream's warnings kept and shown.
const maxWarnings = 16

// refusalsLogged is how many refused entries a refresh logs one by one.
const refusalsLogged = 10

// acceptable returns the entries that pass upstream.Entry.Validate,
// logging the others: one bad entry is left out, never the catalog, and
// nothing is built from a size or time no image can have. The slice is
// copied only if an entry is refused.
func (c *Cache) acceptable(entries []upstream.Entry) []upstream.Entry {
	var ok []upstream.Entry
	refused := 0
	for i, e := range entries {
		err := e.Validate()
		switch {
		case err == nil && refused > 0:
			ok = append(ok, e)
		case err != nil:
			if refused == 0 {
				ok = append(make([]upstream.Entry, 0, len(entries)-1), entries[:i]...)
			}
			if refused < refusalsLogged {
				c.log.Warn("catalog entry refused", "upstream", c.up.URL(""), "err", err)
			}
			refused++
		}
	}
	if refused == 0 {
		return entries
	}
	if refused > refusalsLogged {
		c.log.Warn("catalog entries refused", "upstream", c.up.URL(""), "count", refused, "logged", refusalsLogged)
	}
	return ok
}

// retire marks an image that left the catalog; it is deleted now if
// unused, else by its last user.
func (c *Cache) retire(img *Image) {
	img.mu.Lock()
	img.retired = true
	img.rec.Listed = false
	unused := img.users == 0
	img.mu.Unlock()
	if unused {
		c.deleteImage(img)
	}
}

// CatalogStatus says when the catalog was last refreshed and, if the last
// attempt failed, why and when.
type CatalogStatus struct {
	RefreshedAt time.Time
	Err         error
	ErrAt       time.Time
	StaleSince  time.Time // when refreshes started failing; zero while they succeed
	// Active is the URL of the upstream in use now: Source, or the
	// mirror a failover moved to.
	Active string
	// Warnings say what the upstream left out of its last listing
	// (upstream.Warner): at most maxWarnings lines, then a count.
	Warnings []string
}

// activeSource is the upstream in use now, for upstreams that fail over.
func (c *Cache) activeSource() string {
	if a, ok := c.up.(interface{ Active() string }); ok {
		return a.Active()
	}
	return c.up.URL("")
}

func (c *Cache) CatalogStatus() CatalogStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CatalogStatus{RefreshedAt: c.catalog.RefreshedAt, Err: c.listErr, ErrAt: c.listErrAt, StaleSince: c.catalog.StaleSince,
		Active: c.activeSource(), Warnings: c.warnings}
}

// imageList returns the images of the catalog, in no order, so that
// callers can visit them without holding Cache.mu (each takes Image.mu).
func (c *Cache) imageList() []*Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	imgs := make([]*Image, 0, len(c.images))
	for _, img := range c.images {
		imgs = append(imgs, img)
	}
	return imgs
}

// ImageNamed finds the image called name (a path of the catalog, like
// "ubuntu/jammy.img") in the current catalog.
func (c *Cache) ImageNamed(name string) (*Image, error) {
	e, ok := c.Lookup(name)
	if !ok || e.IsDir() {
		return nil, &Error{Op: "find", Name: name, Err: ErrNotFound}
	}
	return e.Image, nil
}

// entries returns the upstream entries of the catalog's images.
func (c *Cache) entries() []upstream.Entry {
	imgs := c.imageList()
	es := make([]upstream.Entry, len(imgs))
	for i, img := range imgs {
		es[i] = img.entry
	}
	return es
}
