package mount

import (
	"context"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory. A cold read of a large image allocates a little per request
// (go-fuse, net/http) and holds almost nothing, and Go's collector lets
// garbage grow to the size of the live heap before collecting: so the
// daemon's peak RSS would grow with how long a read runs. governMemory
// caps the garbage instead: every few seconds it sets the runtime's soft
// memory limit to what the daemon would use with no garbage, plus
// a headroom: memHeadroom, or an eighth of the live heap if that is more
// (a daemon holding a 100,000-image catalog should not mark it all every
// 4 MiB of requests). The limit follows the live heap, so the collector
// never runs on live data alone; GOGC still applies below it.
const (
	memHeadroom = 4 << 20
	memInterval = 2 * time.Second
)

func governMemory(ctx context.Context) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	t := time.NewTicker(memInterval)
	defer t.Stop()
	defer debug.SetMemoryLimit(math.MaxInt64) // no limit: Go's default
	for {
		metrics.Read(samples)
		total, released := samples[0].Value.Uint64(), samples[1].Value.Uint64()
		objects, live := samples[2].Value.Uint64(), samples[3].Value.Uint64()
		garbage := objects - min(objects, live)
		headroom := max(memHeadroom, live/8)
		debug.SetMemoryLimit(int64(total - released - garbage + headroom))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
