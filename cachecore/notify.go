package cachecore

// Notifier is told what changed in the cache, so that the kernel's
// copies of it (cached lookups, attributes, pages) can be dropped;
// package fs implements it. It is given in Config, so it is in place
// before any goroutine of the cache can call it. Its methods are called
// with no lock of the cache held, sometimes inside a read (an eviction
// that makes room), so they must not block.
type Notifier interface {
	// CatalogChanged: these entries appeared, disappeared or changed
	// identity in a refresh (called from the catalog goroutine).
	CatalogChanged(changes []Change)
	// PagesDropped: bytes [off, off+n) of img were dropped as wrong
	// (failed verification, damage found at rest).
	PagesDropped(img *Image, off, n int64)
	// CachedChanged: what is cached of the images called names changed
	// without an open of theirs (evicted, or prefetched): st_blocks.
	CachedChanged(names []string)
	// Settled: img, called names, was just verified and is settled
	// (Image.Complete). Pages the kernel kept from the reads before the
	// verdict (Image.KeepPages) are now a second copy of the data file's.
	Settled(img *Image, names []string)
}

// Change names a catalog entry that changed: Name in directory Dir.
type Change struct{ Dir, Name string }

// noNotifier is the Notifier of a cache that nobody watches.
type noNotifier struct{}

func (noNotifier) CatalogChanged([]Change)           {}
func (noNotifier) PagesDropped(*Image, int64, int64) {}
func (noNotifier) CachedChanged([]string)            {}
func (noNotifier) Settled(*Image, []string)          {}
