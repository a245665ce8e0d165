package cachecore

import (
	"context"
	"crypto/sha256"
	"os"
	"testing"
)

// benchVerified returns a cache holding one verified 64 MiB image in
// 1 MiB chunks.
func benchVerified(b *testing.B) (*Cache, *Image) {
	up := newFake()
	data := randomBytes(64<<20, 30)
	up.Add("x.img", data, true)
	c, err := Open(Config{Dir: b.TempDir(), Upstream: up, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	e, _ := c.Lookup("x.img")
	img := e.Image
	h, _ := c.Open(img)
	if _, err := h.ReadAt(make([]byte, len(data)), 0); err != nil {
		b.Fatal(err)
	}
	h.Close()
	for img.Info().State != StateVerified {
		c.flush()
	}
	return c, img
}

// BenchmarkHashData is the work of verification: the whole-image sha256
// and every chunk's, over a data file in the page cache (hashing.go does
// it a chunk at a time as chunks land; hashFile in one go).
func BenchmarkHashData(b *testing.B) {
	c, img := benchVerified(b)
	f, err := c.store.OpenFile(img.id, os.O_RDONLY)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(img.Size())
	for b.Loop() {
		if _, _, err := hashFile(f, img.Size(), img.chunkSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck is imgcache verify of that image, unpaced.
func BenchmarkCheck(b *testing.B) {
	c, img := benchVerified(b)
	b.SetBytes(img.Size())
	for b.Loop() {
		res, err := c.Check(context.Background(), "x.img")
		if err != nil || !res.OK() || res.Chunks != 64 {
			b.Fatalf("%+v %v", res, err)
		}
	}
}

// BenchmarkSHA256Memory is the baseline: sha256 of 64 MiB in memory.
func BenchmarkSHA256Memory(b *testing.B) {
	data := randomBytes(64<<20, 31)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		sha256.Sum256(data)
	}
}

// BenchmarkFirstByte is the time to the first byte of a cold 64 MiB image
// with a digest from an in-memory upstream: lazy serves it after one
// chunk, strict after fetching and verifying all of it.
func BenchmarkFirstByte(b *testing.B) {
	data := randomBytes(64<<20, 32)
	for _, mode := range []VerifyMode{VerifyLazy, VerifyStrict} {
		b.Run(mode.String(), func(b *testing.B) {
			up := newFake()
			up.Add("x.img", data, true)
			for b.Loop() {
				b.StopTimer()
				c, err := Open(Config{Dir: b.TempDir(), Upstream: up, Logger: discardLogger(), Verify: mode})
				if err != nil {
					b.Fatal(err)
				}
				e, _ := c.Lookup("x.img")
				h, _ := c.Open(e.Image)
				b.StartTimer()
				if _, err := h.Read(context.Background(), 0, 1); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				h.Close()
				c.Close()
				b.StartTimer()
			}
		})
	}
}
