package mount

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Memory. A cold read allocates a little per request (go-fuse's request
// buffers, fetch buffers after a collection) and holds almost nothing new,
// but Go's collector lets garbage grow to the size of the live heap
// before collecting (GOGC=100): so the daemon's peak RSS grew with how long
// a read ran (a 4 GiB image peaked 20% above a 1 GiB one). governMemory
// caps the garbage instead: every few seconds it sets GOGC so that the
// next collection comes after memHeadroom of new allocation, or an eighth
// of the live heap if that is more (a 100,000-image catalog should not be
// marked every few MiB of requests). Unlike a soft memory limit, this
// never makes the collector run on live data alone or return memory to
// the kernel only to fault it in again.
const (
	memHeadroom = 4 << 20
	memInterval = 2 * time.Second
)

func governMemory(ctx context.Context) {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(memInterval)
	defer t.Stop()
	was := debug.SetGCPercent(100)
	defer debug.SetGCPercent(was)
	for {
		metrics.Read(live)
		if l := live[0].Value.Uint64(); l > 0 {
			headroom := max(memHeadroom, l/8)
			debug.SetGCPercent(int(max(10, min(100, 100*headroom/l))))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
