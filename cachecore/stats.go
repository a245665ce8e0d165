package cachecore

import (
	"sync/atomic"
)

// Stats counts what the cache does, in the manner of groupcache's Stats:
// plain atomic counters, bumped on the paths they count and safe to read
// at any time. Counters start at zero with each daemon.
type Stats struct {
	Opens           atomic.Uint64 // opens for reading (each image's hits, summed)
	Hits            atomic.Uint64 // reads that reached the daemon and found their bytes cached
	Misses          atomic.Uint64 // reads that had to wait for bytes from the upstream
	BytesFetched    atomic.Uint64 // bytes received from the upstream
	BytesServed     atomic.Uint64 // bytes handed to reads that reached the daemon
	Evictions       atomic.Uint64 // images whose cached bytes were dropped to make room or on request
	FetchErrors     atomic.Uint64 // range fetches that failed
	FetchRetries    atomic.Uint64 // range fetches tried again after a temporary failure
	FetchesInFlight atomic.Int64  // range requests running now
	DirectReads     atomic.Uint64 // reads served from the upstream without storing (no room: ErrNoRoom)
	BytesHashed     atomic.Uint64 // bytes read back from data files and hashed for verification
}

// Stats returns the cache's live counters.
func (c *Cache) Stats() *Stats { return &c.stats }

// Snapshot is a copy of the counters taken at one moment, plus gauges of
// the cache's contents computed at that moment.
type Snapshot struct {
	Opens, Hits, Misses       uint64
	BytesFetched, BytesServed uint64
	Evictions, FetchErrors    uint64
	FetchRetries, DirectReads uint64
	FetchesInFlight           int64

	Images  int           // images in the catalog
	Cold    int           // of them, those held cold (cold.go): nothing has happened to them
	ByState map[State]int // images in each state
	Pinned  int           // pinned images
	Queued  int           // images waiting to be prefetched or being prefetched
	Usage   Usage         // disk use against the limit; IndexBytes measured now
}

// Snapshot reads the counters and measures the cache's contents. It visits
// every image (a lock each), so it is meant for the API and metrics, not
// for hot paths.
func (c *Cache) Snapshot() Snapshot {
	s := Snapshot{
		Opens:           c.stats.Opens.Load(),
		Hits:            c.stats.Hits.Load(),
		Misses:          c.stats.Misses.Load(),
		BytesFetched:    c.stats.BytesFetched.Load(),
		BytesServed:     c.stats.BytesServed.Load(),
		Evictions:       c.stats.Evictions.Load(),
		FetchErrors:     c.stats.FetchErrors.Load(),
		FetchRetries:    c.stats.FetchRetries.Load(),
		DirectReads:     c.stats.DirectReads.Load(),
		FetchesInFlight: c.stats.FetchesInFlight.Load(),
		ByState:         make(map[State]int),
	}
	c.mu.Lock()
	for _, img := range c.images {
		img.mu.Lock()
		s.ByState[img.stateLocked()]++
		if img.rec.Pinned {
			s.Pinned++
		}
		img.mu.Unlock()
	}
	cold := c.cold.cold() // nothing cached (cold.go)
	s.ByState[StateAbsent] += cold
	s.Images, s.Cold = len(c.images)+cold, cold
	c.mu.Unlock()
	s.Queued = len(c.Queued())
	s.Usage = c.Usage()
	// The pruner measures the index once a tick; an API caller wants now.
	s.Usage.IndexBytes = c.idx.Size()
	return s
}
