package main

import (
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/spf13/pflag"
)

// minMaxSize is the smallest --max-size taken: a smaller limit (say 20,
// meant as 20G) cannot hold a chunk and is surely a mistake.
const minMaxSize = 1 << 20

// lifecycleFlags adds the flags of the size limit, pruner, cleaner and
// prefetcher to a mount's flag set; the function it returns reads them
// once the flags are parsed.
func lifecycleFlags(fs *pflag.FlagSet) func() (cachecore.Lifecycle, error) {
	maxSize := sizeFlag(fs, "max-size", 0, offOrSizeAtLeast(minMaxSize),
		"most bytes the cached data may take on disk, a `size` of at least 1M, e.g. 20G; 0: half of the cache directory's filesystem")
	high := percentFlag(fs, "high-water", 100*cachecore.DefaultHighWater,
		"`percent` of --max-size (above 0, at most 100) above which the pruner evicts least recently used images")
	low := percentFlag(fs, "low-water", 100*cachecore.DefaultLowWater,
		"`percent` of --max-size (above 0, at most --high-water) the pruner evicts down to")
	stall := durationFlag(fs, "stall-time", cachecore.DefaultStallTime, offOrAtLeast(time.Second),
		"partial images not read or fetched for this long, and invalid images, are reaped (checked every half of it), a `duration` of at least 1s; 0: never")
	prefetchers := intFlag(fs, "prefetchers", cachecore.DefaultPrefetchers, nonNegative,
		"images prefetched at once, queued and pinned ones, a `number`; 0: none (the queue is kept)")
	rate := sizeFlag(fs, "prefetch-rate", 0, anySize, "most bytes per second the prefetchers fetch, a `size`, e.g. 10M; 0: no limit")
	return func() (cachecore.Lifecycle, error) {
		if *low > *high {
			return cachecore.Lifecycle{}, usageErr("--low-water %g is above --high-water %g", *low, *high)
		}
		lc := cachecore.Lifecycle{
			MaxSize:      *maxSize,
			HighWater:    *high / 100,
			LowWater:     *low / 100,
			StallTime:    *stall,
			Prefetchers:  *prefetchers,
			PrefetchRate: *rate,
		}
		if lc.StallTime == 0 {
			lc.StallTime = -1 // the flag's 0 is "never"; the Config's is "default"
		}
		if lc.Prefetchers == 0 {
			lc.Prefetchers = -1
		}
		return lc, nil
	}
}
