package cachecore

import (
	"context"
	"fmt"
	"testing"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// BenchmarkWarmRead is the daemon's work for a read that is cached: find
// the chunks present and say where the bytes are (4 KiB and 1 MiB reads).
func BenchmarkWarmRead(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			up := newFake()
			data := randomBytes(64<<20, 1)
			up.Add("x.img", data, false)
			c := openTestB(b, up)
			img := mustLookupB(b, c, "x.img")
			h, _ := c.Open(img)
			defer h.Close()
			if _, err := h.Read(context.Background(), 0, len(data)); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			off := int64(0)
			for b.Loop() {
				if _, err := h.Read(context.Background(), off, size); err != nil {
					b.Fatal(err)
				}
				off = (off + 7*int64(size)) % int64(len(data)-size)
			}
		})
	}
}

// BenchmarkColdRead fetches a 64 MiB image from an in-process upstream
// into the cache, sequentially, as a reader streaming it would.
func BenchmarkColdRead(b *testing.B) {
	up := newFake()
	data := randomBytes(64<<20, 2)
	up.Add("x.img", data, false)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		c := openTestB(b, up)
		img := mustLookupB(b, c, "x.img")
		h, _ := c.Open(img)
		b.StartTimer()
		for off := int64(0); off < int64(len(data)); off += 1 << 20 {
			if _, err := h.Read(context.Background(), off, 1<<20); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		h.Close()
		c.Close()
		b.StartTimer()
	}
}

// BenchmarkIndexBatch writes the records and chunk maps of 1,000 images
// in one batch, as the flusher does.
func BenchmarkIndexBatch(b *testing.B) {
	x, err := index.Open(b.TempDir(), discardLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	var bt index.Batch
	m := chunkmap.New(1024)
	for i := range 1000 {
		id := fmt.Sprintf("%064x", i)
		bt.Records = append(bt.Records, index.Record{ID: id, Name: fmt.Sprintf("img-%d", i), Size: 1 << 30, ChunkSize: 1 << 20, Listed: true, Hits: uint64(i)})
		bt.PutMap(id, m.Marshal())
	}
	b.ResetTimer()
	for b.Loop() {
		if err := x.Write(&bt); err != nil {
			b.Fatal(err)
		}
	}
}

func openTestB(b *testing.B, up *upstreamtest.Upstream) *Cache {
	b.Helper()
	c, err := Open(Config{Dir: b.TempDir(), Upstream: up})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func mustLookupB(b *testing.B, c *Cache, name string) *Image {
	e, ok := c.Lookup(name)
	if !ok {
		b.Fatal("not found")
	}
	return e.Image
}
