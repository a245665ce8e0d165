package cachecore

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"github.com/imgcache/imgcache/cachecore/space"
)

// The cache's lifecycle: a hard size limit on the data files (usage.go),
// kept by synchronous eviction before each write and by a background
// pruner with high and low watermarks (prune.go); pins (pin.go), a
// prefetch queue (prefetch.go) and a cleaner of stalled and invalid
// images (clean.go). docs/lifecycle.md explains the decisions; their
// locks are in the lock order of doc.go.

// Defaults for the Lifecycle fields left zero.
const (
	DefaultHighWater     = 0.90
	DefaultLowWater      = 0.80
	DefaultStallTime     = 24 * time.Hour // Glance's image_cache_stall_time
	DefaultPrefetchers   = 2
	DefaultPruneInterval = 10 * time.Second
)

// Lifecycle configures the size limit, the pruner, the cleaner and the
// prefetcher.
type Lifecycle struct {
	// MaxSize bounds the allocated bytes of the data files; 0: half the
	// size of the filesystem that holds the cache directory.
	MaxSize int64
	// HighWater and LowWater are fractions of MaxSize: when usage passes
	// HighWater the pruner evicts least recently used images until it is
	// below LowWater. 0: DefaultHighWater, DefaultLowWater.
	HighWater, LowWater float64
	// StallTime: a partial image with no chunk fetched for this long (and
	// nobody reading it) is reaped by the cleaner, which runs on this
	// period too. 0: DefaultStallTime; <0: no cleaner.
	StallTime time.Duration
	// Prefetchers is how many images are prefetched at once (queued and
	// pinned images). 0: DefaultPrefetchers; <0: none (the queue is kept).
	Prefetchers int
	// PrefetchRate bounds the prefetchers' bandwidth in bytes per second;
	// 0: no bound.
	PrefetchRate int64
	// PruneInterval is how often the pruner looks at usage (it is also
	// kicked when a write passes the high watermark). 0: default.
	PruneInterval time.Duration
	meter         fileMeter // measures data files; tests: a fake filesystem (nil: the real one)
}

func (l *Lifecycle) fill(dir string) error {
	if l.MaxSize <= 0 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			return fmt.Errorf("size of the cache filesystem: %w", err)
		}
		l.MaxSize = int64(st.Blocks) * st.Bsize / 2
	}
	if l.HighWater == 0 {
		l.HighWater = DefaultHighWater
	}
	if l.LowWater == 0 {
		l.LowWater = min(DefaultLowWater, l.HighWater)
	}
	if !(0 < l.LowWater && l.LowWater <= l.HighWater && l.HighWater <= 1) {
		return fmt.Errorf("watermarks: want 0 < low (%g%%) <= high (%g%%) <= 100%%", 100*l.LowWater, 100*l.HighWater)
	}
	if l.StallTime == 0 {
		l.StallTime = DefaultStallTime
	}
	if l.Prefetchers == 0 {
		l.Prefetchers = DefaultPrefetchers
	}
	if l.PruneInterval <= 0 {
		l.PruneInterval = DefaultPruneInterval
	}
	if l.meter == nil {
		l.meter = osMeter{}
	}
	return nil
}

// lifecycle is the Cache's state for all of the above.
type lifecycle struct {
	// read only after Open
	space        *space.Ledger[*Image] // usage against the limit, the LRU list (usage.go)
	pruneKick    chan struct{}
	prefetchKick chan struct{}
	pacer        *rate.Limiter // nil: prefetch bandwidth not bounded (prefetch.go)

	// indexMu orders index writes of chunk maps: the flusher holds it
	// while it writes its snapshots, and an eviction while it writes the
	// empty maps, so that a flusher's stale snapshot never lands after an
	// eviction (see dropData).
	indexMu sync.Mutex

	// pruneMu makes one pruning pass at a time, so that two passes do
	// not both evict for the same excess.
	pruneMu sync.Mutex

	mu        sync.Mutex           // protects the following; a leaf lock (see the lock order)
	queue     []*Image             // prefetch queue, oldest first (pinned images too)
	inQueue   map[*Image]bool      // the images of queue
	active    map[*Image]bool      // images a prefetcher works on
	notBefore map[*Image]time.Time // images whose prefetch failed: when to try again
}

// imageLife is an image's lifecycle state, protected by its Image.mu.
type imageLife struct {
	// alloc is what its data file is booked for: its last final measure
	// plus the reservations of the writes since (usage.go), which
	// unmeasured says there were; writes counts them, failed holds the
	// chunks booked for a failed write since (nil: none).
	alloc      int64
	unmeasured bool
	writes     uint64
	failed     map[int]bool
	gen        uint64 // bumped when its data is dropped: older flush snapshots are stale
}

func (c *Cache) initLifecycle() error {
	lc := c.cfg.Lifecycle
	// The ledger holds the images that may be evicted now (unused, not
	// pinned, with data), most recently used first.
	c.life.space = space.New[*Image](lc.MaxSize, lc.HighWater, lc.LowWater)
	c.life.pruneKick = make(chan struct{}, 1)
	c.life.inQueue = make(map[*Image]bool)
	c.life.active = make(map[*Image]bool)
	c.life.notBefore = make(map[*Image]time.Time)
	c.life.prefetchKick = make(chan struct{}, 1)
	if lc.PrefetchRate > 0 {
		c.life.pacer = newPacer(lc.PrefetchRate)
	}
	c.measureIndex()
	if err := c.loadUsage(); err != nil {
		return err
	}
	c.loadQueue()
	return nil
}

// startLifecycle starts the pruner, the cleaner and the prefetchers.
func (c *Cache) startLifecycle() {
	c.wg.Add(1)
	go c.pruneLoop()
	if c.cfg.StallTime > 0 {
		c.wg.Add(1)
		go c.cleanLoop()
	}
	c.startPrefetchers()
}
