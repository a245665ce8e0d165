package cachecore

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// The lifecycle at scale: a cache of 100,000 small images, each cached
// whole (one 4 KiB chunk), made through the real read path once per
// benchmark run.

const benchImages = 100_000

// populated makes a cache directory holding benchImages cached images and
// returns it (closed) with its upstream.
func populated(b *testing.B) (string, *upstreamtest.Upstream) {
	b.Helper()
	up := newFake()
	page := randomBytes(4096, 9)
	for i := range benchImages {
		up.Add(fmt.Sprintf("d%02d/img%06d", i%100, i), page, false)
	}
	dir := b.TempDir()
	c, err := Open(Config{Dir: dir, Upstream: up, ChunkSize: MinChunkSize, ReadAhead: -1,
		Lifecycle: Lifecycle{Prefetchers: -1, StallTime: -1}})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := range work {
				e, _ := c.Lookup(fmt.Sprintf("d%02d/img%06d", i%100, i))
				h, err := c.Open(e.Image)
				if err != nil {
					b.Error(err)
					continue
				}
				if _, err := h.ReadAt(buf, 0); err != nil {
					b.Error(err)
				}
				h.Close()
			}
		}()
	}
	for i := range benchImages {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := c.Close(); err != nil {
		b.Fatal(err)
	}
	return dir, up
}

// BenchmarkPrune100k times evicting every one of 100,000 cached images
// (index entries rewritten, data files deleted) as the pruner does.
func BenchmarkPrune100k(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		dir, up := populated(b)
		c, err := Open(Config{Dir: dir, Upstream: up, Lifecycle: Lifecycle{Prefetchers: -1, StallTime: -1,
			PruneInterval: time.Hour}})
		if err != nil {
			b.Fatal(err)
		}
		if u := c.Usage(); u.CacheBytes < benchImages*4096 {
			b.Fatalf("usage %d after populating", u.CacheBytes)
		}
		b.StartTimer()
		start := time.Now()
		d := c.pruneTo(0)
		took := time.Since(start)
		b.StopTimer()
		if len(d.Evicted) != benchImages || c.Usage().CacheBytes != 0 {
			b.Fatalf("pruned %d images, usage left %d", len(d.Evicted), c.Usage().CacheBytes)
		}
		b.ReportMetric(float64(took.Nanoseconds())/benchImages, "ns/image")
		c.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkStartup100k times opening a cache of 100,000 cached images:
// reading the index, reconciling it with the data files, measuring usage,
// loading the LRU list.
func BenchmarkStartup100k(b *testing.B) {
	dir, up := populated(b)
	b.ResetTimer()
	for b.Loop() {
		c, err := Open(Config{Dir: dir, Upstream: up, Lifecycle: Lifecycle{Prefetchers: -1, StallTime: -1}})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if u := c.Usage(); u.CacheBytes < benchImages*4096 || u.Evictable != u.CacheBytes {
			b.Fatalf("usage at start-up %+v", u)
		}
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkPrefetchRate prefetches an 8 MiB image with --prefetch-rate
// 2M and reports the rate achieved (bytes/s), to compare with the 2 MiB/s
// asked for.
func BenchmarkPrefetchRate(b *testing.B) {
	const size, rate = 8 << 20, 2 << 20
	up := newFake()
	up.Add("x.img", randomBytes(size, 5), false)
	for b.Loop() {
		c, err := Open(Config{Dir: b.TempDir(), Upstream: up, ChunkSize: MinChunkSize,
			Lifecycle: Lifecycle{PrefetchRate: rate}})
		if err != nil {
			b.Fatal(err)
		}
		img := mustLookupB(b, c, "x.img")
		start := time.Now()
		if err := c.Queue("x.img"); err != nil {
			b.Fatal(err)
		}
		for !img.Complete() {
			time.Sleep(time.Millisecond)
		}
		took := time.Since(start)
		b.ReportMetric(size/took.Seconds(), "bytes/s")
		c.Close()
	}
}
