package cachecore

import (
	"os"
	"slices"
	"time"

	"github.com/imgcache/imgcache/cachecore/space"
	"github.com/imgcache/imgcache/cachecore/store"
)

// Usage accounting. Usage is what the data files take on disk: their
// allocated blocks (st_blocks), not their apparent sizes, which are the
// full image sizes of sparse files. A write is preceded by a reservation
// that covers the most it can allocate, so that used + reserved, and with
// it the data directory, never passes the limit; once the write is done
// its reservation moves to its image's books. A file is measured at
// start-up and when its image's last user lets go of it, after a sync:
// only then is the measure final. Before, st_blocks can read low: ext4
// allocates delayed blocks when it writes a file back and, for that
// instant, st_blocks lacks the extent being allocated (1 MiB dips, and 0
// for a 1 MiB file, seen while a file was written and synced), and the
// extent tree's own blocks come only then. The index's size, as last
// measured (after each flush), is taken off the limit too, so that the
// whole cache directory stays within it; the index is not ours to bound,
// so that part holds only as well as the last measure.

// ErrNoRoom: a chunk cannot be stored because the cache is full of images
// that are open or pinned. Reads that meet it are served straight from
// the upstream without storing (Span.Data).
var ErrNoRoom = space.ErrNoRoom

const (
	blockSize = 4096
	// writeSlack is what a chunk write may allocate beyond its data
	// blocks: the filesystem's own blocks for the file's extent tree.
	writeSlack = 2 * blockSize
)

// loadUsage measures every data file at start-up. A file of an image that
// has no chunk marked present holds nothing anyone can read: it is
// removed. The images with data that may be evicted fill the LRU list,
// oldest access last.
func (c *Cache) loadUsage() error {
	var used int64
	var evictable []*Image
	files, err := c.store.Scan(nil) // openStorage has reported the strays
	if err != nil {
		return err
	}
	for _, f := range files {
		img := c.images[f.ID]
		if img == nil { // openStorage removed orphans
			continue
		}
		if img.present.Count() == 0 {
			if err := c.store.Remove(img.id); err != nil {
				return err
			}
			continue
		}
		img.life.alloc = f.Alloc
		used += img.life.alloc
		if !img.rec.Pinned && !img.rec.Content {
			evictable = append(evictable, img)
		}
	}
	slices.SortFunc(evictable, func(a, b *Image) int { return lastUse(b).Compare(lastUse(a)) })
	ids, sizes := make([]string, len(evictable)), make([]int64, len(evictable))
	for i, img := range evictable {
		ids[i], sizes[i] = img.id, img.life.alloc
	}
	c.life.space.Load(used, ids, evictable, sizes)
	if c.life.space.OverHigh() {
		c.kickPrune()
	}
	return nil
}

// lastUse is when an image was last opened or fetched into, as the index
// knows it: the LRU order at start-up. (A prefetched image that nobody
// read yet is as recent as its fetch, as it was before the restart.)
func lastUse(img *Image) time.Time {
	if img.rec.LastFetch.After(img.rec.LastAccess) {
		return img.rec.LastFetch
	}
	return img.rec.LastAccess
}

// reserve promises n bytes to a write, evicting least recently used
// images (synchronously, here) until they fit under the limit; it fails
// with ErrNoRoom when nothing more can be evicted (space.Ledger.Reserve).
func (c *Cache) reserve(n int64) error {
	high, err := c.life.space.Reserve(n, func(victims []*Image) { c.dropData(victims) })
	if high {
		c.kickPrune()
	}
	return err
}

func (c *Cache) unreserve(n int64) { c.life.space.Unreserve(n) }

// setAllocLocked records a final measure of img's data file (or 0: the
// file is gone); img.mu is held.
func (c *Cache) setAllocLocked(img *Image, alloc int64) {
	delta := alloc - img.life.alloc
	img.life.alloc, img.life.unmeasured, img.life.failed = alloc, false, nil
	c.life.space.Measured(delta)
}

// bookLocked moves n reserved bytes to img's books: a write that may
// have allocated them is done. img.mu is held.
func (c *Cache) bookLocked(img *Image, n int64) {
	img.life.alloc += n
	img.life.unmeasured = true
	img.life.writes++
	c.life.space.Book(n)
}

// fileMeter measures and syncs open data files: the filesystem, or in
// tests a fake one.
type fileMeter interface {
	allocated(f *os.File) (int64, error) // st_blocks * 512
	sync(f *os.File) error
}

type osMeter struct{}

func (osMeter) allocated(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return store.Allocated(fi), nil
}

func (osMeter) sync(f *os.File) error { return f.Sync() }

// room is what one fetch has reserved for the chunk it is writing.
type room struct {
	c       *Cache
	img     *Image
	file    fileWriterAt
	held    int64
	chunk   int  // the chunk held is for
	written bool // a write of it to the file was tried
}

// take reserves room for chunk i (its blocks and writeSlack).
func (r *room) take(i int) error {
	n := (r.img.chunkLen(i)+blockSize-1)/blockSize*blockSize + writeSlack
	if err := r.c.reserve(n); err != nil {
		return err
	}
	r.held, r.chunk, r.written = n, i, false
	return nil
}

// WriteAt writes to the data file within the room taken.
func (r *room) WriteAt(p []byte, off int64) (int, error) {
	r.written = true
	return r.img.writes.write(r.file, p, off) // hashing.go
}

// wrote moves the reservation of a chunk that was written to the image's
// books. They stay above the file's blocks (by the slack, at least) until
// its last user lets go: a measure now could read low (see above).
func (r *room) wrote() {
	if r.held != 0 {
		r.settle(true)
	}
}

// giveBack ends a reservation whose write failed: what it allocated, if
// it wrote anything, is booked like a chunk's, once for the chunk
// however many times its writes fail (an upstream that cuts every reply
// short must not inflate the books of an image that stays open).
func (r *room) giveBack() {
	if r.held != 0 {
		r.settle(false)
	}
}

func (r *room) settle(landed bool) {
	img := r.img
	img.mu.Lock()
	if r.written && !img.life.failed[r.chunk] {
		r.c.bookLocked(img, r.held)
		if !landed {
			if img.life.failed == nil {
				img.life.failed = make(map[int]bool)
			}
			img.life.failed[r.chunk] = true
		}
	} else { // nothing written, or over what a failed write of the chunk booked
		r.c.unreserve(r.held)
	}
	if landed {
		delete(img.life.failed, r.chunk)
		img.rec.LastFetch = r.c.now()
	}
	img.mu.Unlock()
	r.held = 0
}

// syncForMeasure is called by the last user of an image, img.mu held,
// before it lets go: if writes were booked since the file was last
// measured, the file is synced (with img.mu released: the user still
// holds the file open) so that releasedLocked may measure it. It reports
// whether the sync covered every booked write.
func (img *Image) syncForMeasure() bool {
	if !img.life.unmeasured || img.file == nil {
		return false
	}
	f, writes := img.file, img.life.writes
	img.mu.Unlock()
	err := img.c.cfg.meter.sync(f)
	img.mu.Lock()
	return err == nil && img.life.writes == writes
}

// releasedLocked measures an image's data file when its last user lets go
// (nothing writes to it) and, if the image may now be evicted, puts it at
// the front of the LRU list. img.mu is held; fstat of an open file is a
// lookup in the kernel's inode, not disk I/O.
//
// The measure replaces the books only if it is final: the file was
// synced after the writes booked (synced), or none were booked since the
// last measure. Otherwise the books stay (an upper bound) until the next
// release. A final measure below the books is a punch (check.go) or the
// slack of the writes; one of a file no write of ours touched that reads
// below the books may be a file written before a restart that the kernel
// is writing back: it is synced and measured again.
func (c *Cache) releasedLocked(img *Image, synced bool) {
	if img.file != nil && (synced || !img.life.unmeasured) {
		meter := c.cfg.meter
		a, err := meter.allocated(img.file)
		if err == nil && a < img.life.alloc && !synced {
			if err = meter.sync(img.file); err == nil {
				a, err = meter.allocated(img.file)
			}
		}
		if err == nil {
			c.setAllocLocked(img, a)
		}
	}
	if img.users == 0 && !img.rec.Pinned && !img.rec.Content && !img.retired && img.life.alloc > 0 {
		c.life.space.Evictable(img.id, img, img.life.alloc)
	} else {
		c.life.space.Keep(img.id)
	}
}

// forgetUsage takes an image whose file was deleted (it left the catalog)
// off the books: usage, the LRU list, the prefetch queue. An image opened
// again since its file was deleted (a file node the kernel still holds)
// keeps its books: its new user's writes are on them, and its last
// release deletes it again.
func (c *Cache) forgetUsage(img *Image) {
	img.mu.Lock()
	if img.users > 0 {
		img.mu.Unlock()
		return
	}
	c.setAllocLocked(img, 0)
	img.mu.Unlock()
	c.life.space.Keep(img.id)
	c.life.mu.Lock()
	c.removeFromQueueLocked(img)
	c.life.mu.Unlock()
}

// inUseLocked takes an image out of the LRU list: it has a user now.
func (c *Cache) inUseLocked(img *Image) { c.life.space.Keep(img.id) }

// Usage is how much of its limit the cache uses.
type Usage struct {
	CacheBytes int64 // allocated bytes of the data files
	Reserved   int64 // bytes promised to writes in progress
	Limit      int64 // --max-size
	HighWater  int64 // bytes: the pruner starts above this
	LowWater   int64 // bytes: the pruner stops below this
	IndexBytes int64 // allocated bytes of the index directory, as last measured: counted against the limit
	Evictable  int64 // bytes of images that may be evicted now
}

// Usage reports the cache's usage.
func (c *Cache) Usage() Usage {
	u := c.life.space.Usage()
	return Usage{CacheBytes: u.Used, Reserved: u.Reserved, Limit: u.Limit, HighWater: u.High, LowWater: u.Low,
		IndexBytes: u.Index, Evictable: u.Evictable}
}
