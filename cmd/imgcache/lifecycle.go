package main

import (
	"flag"

	"github.com/imgcache/imgcache/cachecore"
)

// lifecycleFlags adds the flags of the size limit, pruner, cleaner and
// prefetcher to a mount's flag set.
func lifecycleFlags(fs *flag.FlagSet) func() cachecore.Lifecycle {
	maxSize := sizeFlag(fs, "max-size", 0, "most bytes the cached data may take on disk, e.g. 20G (0: half of the cache directory's filesystem)")
	high := fs.Float64("high-water", 100*cachecore.DefaultHighWater, "percent of --max-size above which the pruner evicts least recently used images")
	low := fs.Float64("low-water", 100*cachecore.DefaultLowWater, "percent of --max-size the pruner evicts down to")
	stall := fs.Duration("stall-time", cachecore.DefaultStallTime, "partial images not read or fetched for this long, and invalid images, are reaped (checked every half of it; 0: never)")
	prefetchers := fs.Int("prefetchers", cachecore.DefaultPrefetchers, "images prefetched at once, queued and pinned ones (0: none; the queue is kept)")
	rate := sizeFlag(fs, "prefetch-rate", 0, "most bytes per second the prefetchers fetch, e.g. 10M (0: no limit)")
	return func() cachecore.Lifecycle {
		lc := cachecore.Lifecycle{
			MaxSize:      int64(*maxSize),
			HighWater:    *high / 100,
			LowWater:     *low / 100,
			StallTime:    *stall,
			Prefetchers:  *prefetchers,
			PrefetchRate: int64(*rate),
		}
		if lc.StallTime == 0 {
			lc.StallTime = -1 // the flag's 0 is "never"; the Config's is "default"
		}
		if lc.Prefetchers == 0 {
			lc.Prefetchers = -1
		}
		return lc
	}
}
