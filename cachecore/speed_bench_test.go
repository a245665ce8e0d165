package cachecore

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
	"github.com/imgcache/imgcache/origin"
)

// BenchmarkColdReadHTTP fetches a 64 MiB image sequentially, 1 MiB reads
// as the kernel sends them, from an in-process origin server over
// loopback HTTP: the fetcher, read-ahead and range replies together.
// With readers > 1 several handles read the same image at once (they
// share every fetch); bytes/s counts one image.
func BenchmarkColdReadHTTP(b *testing.B) {
	for _, readers := range []int{1, 4} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			const size = 64 << 20
			url := serveRandomImage(b, size)
			b.SetBytes(size)
			for b.Loop() {
				b.StopTimer()
				up, err := httpdir.New(url, httpdir.Options{})
				if err != nil {
					b.Fatal(err)
				}
				c, err := Open(Config{Dir: b.TempDir(), Upstream: up})
				if err != nil {
					b.Fatal(err)
				}
				img := mustLookupB(b, c, "x.img")
				b.StartTimer()
				var wg sync.WaitGroup
				for range readers {
					h, err := c.Open(img)
					if err != nil {
						b.Fatal(err)
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer h.Close()
						for off := int64(0); off < size; off += 1 << 20 {
							if _, err := h.Read(context.Background(), off, 1<<20); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if got := c.Stats().BytesFetched.Load(); got != size {
					b.Fatalf("fetched %d bytes of a %d-byte image", got, size)
				}
				c.Close()
				b.StartTimer()
			}
		})
	}
}

func serveRandomImage(b *testing.B, size int) string {
	b.Helper()
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.img"), randomBytes(size, 7), 0o644); err != nil {
		b.Fatal(err)
	}
	srv, err := origin.New(dir, origin.Options{})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	b.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL + "/"
}

// BenchmarkIndexBatchSizes writes batches of records and chunk maps of
// 1, 100 and 10,000 images, as the flusher does after a quiet or a busy
// interval; ns/op is per batch.
func BenchmarkIndexBatchSizes(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			x, err := index.Open(b.TempDir(), discardLogger())
			if err != nil {
				b.Fatal(err)
			}
			defer x.Close()
			bt := recordBatch(0, n)
			b.ResetTimer()
			for b.Loop() {
				if err := x.Write(&bt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIndexLoad100k reads an index of 100,000 images, as start-up
// does before the mount answers.
func BenchmarkIndexLoad100k(b *testing.B) {
	dir := b.TempDir()
	x, err := index.Open(dir, discardLogger())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100_000; i += 10_000 {
		bt := recordBatch(i, 10_000)
		if err := x.Write(&bt); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		l, err := x.Load()
		if err != nil || len(l.Records) != 100_000 {
			b.Fatalf("load: %d records, %v", len(l.Records), err)
		}
	}
	b.StopTimer()
	x.Close()
}

func recordBatch(from, n int) index.Batch {
	var bt index.Batch
	m := chunkmap.New(1024)
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("%064x", i)
		bt.Records = append(bt.Records, index.Record{ID: id, Name: fmt.Sprintf("img-%d", i), Size: 1 << 30,
			ChunkSize: 1 << 20, Listed: true, Hits: uint64(i)})
		bt.PutMap(id, m.Marshal())
	}
	return bt
}
