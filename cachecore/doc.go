// Package cachecore is imgcache's cache engine: a read-through cache of
// images from an upstream, kept as sparse files plus a badger index in one
// directory. It knows nothing of FUSE; package fs adapts it and hears of
// changes through a Notifier (notify.go).
//
// # Floor plan
//
// This package is the Cache / Image / Handle domain; what it stands on has
// a package of its own, each importing only those below it:
//
//	cachecore           Cache, Image, Handle: catalog, fetch, read-ahead,
//	                    deadlines, verify, checks, prune/evict/pin/clean/prefetch
//	cachecore/index     badger: records, schema, held writes, damage, salvage
//	cachecore/space     the ledger of used/reserved/freeing bytes and the LRU
//	cachecore/store     data files, the lock, holes, free space, directory trust
//	cachecore/chunkmap  which chunks of an image are present
//	cachecore/upstream  the Upstream interface; one package per protocol
//
// # One cold read
//
// fs calls Cache.Lookup (tree.go: an immutable tree, swapped whole when
// the upstream's listing is refreshed; an image nothing has happened to
// is held cold until then, cold.go), then Cache.Open, which counts a hit
// and returns a Handle (handle.go). Handle.Read plans read-ahead, then
// ensure (fetch.go) finds the missing chunks and creates one flight per
// chunk under Image.mu, grouped into runs; each run takes a fetch slot
// (slots.go), reserves room (usage.go, space.Ledger), makes one range
// request through the Upstream and writes the reply into the data file
// (a plain-HTTP reply by splice(2), upstream.Splicer), landing each chunk
// as its last byte is written. A landed chunk extends the image's hash
// when it continues the hashed prefix (hashing.go, at a low priority:
// lowprio.go), so a sequential read is verified as it ends. Read returns
// a Span that fs hands to the kernel (splice). A flusher (flush.go)
// persists chunk maps and counters in batches, after syncing the data
// they describe.
//
// # Where the coming work goes
//
//   - Catalog intake: Cache.refresh and acceptable (catalog.go) take the
//     upstream's entries in, group (catalog_intake.go) makes them images
//     (one per ID: the names of a digest are one), storeContent
//     (catalog_content.go) stores catalog files before publish swaps the
//     tree; an entry's identity is its imageKey (keyer, cache.go) and its
//     version upstream.Entry.Version.
//   - The fetcher: fetchRun and fetchRange (fetch.go), with request.go
//     (abandonment, the low-speed limit), slots.go, and stream.go (a
//     whole reply from a server that ignores Range, read once).
//   - The image: newImage (image.go) from an index.Record.
//
// # Lock order
//
// Every lock of the engine, in the order they may be taken (a lock is
// never taken while one below it is held):
//
//	pinState.mu         one change of the pin rules at a time (pins.go)
//	lifecycle.pruneMu   one pruning pass at a time (prune.go)
//	Cache.mu            the images by ID (listed and lingering), the cold ones, the catalog's state
//	lifecycle.indexMu   orders writes of chunk maps: flush against eviction
//	                    (never held together with Cache.mu)
//	Image.mu            an image's chunk map, flights, users, record
//	Handle.mu           a handle's read-ahead and held failure
//	space.Ledger.mu     the books and the LRU list         } leaves: nothing
//	lifecycle.mu        the prefetch queue                  } is taken under
//	fetchSlots.mu       who holds fetch slots               } them
//	request.mu, rateGuard.mu  one run's waiters, its speed  }
//	ownWrites.mu        an image's writes while it is hashed }
//	index.Index.mu      the index (taken with none of the above held but
//	                    lifecycle.indexMu or pinState.mu)
//
// No lock is held across network I/O. Disk I/O under a lock: Image.mu
// covers opening an image's data file on its first use, fstat at its last
// release, and punching out chunks found wrong (check.go), so that no
// fetch can write a chunk that is then punched out; dropData deletes files
// holding only the victim's Image.mu (an unused image). The catalog tree
// is read without locks (atomic.Pointer).
package cachecore
