package cachecore

import (
	"crypto/sha256"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// newFake returns the shared fake upstream (upstreamtest), empty.
func newFake() *upstreamtest.Upstream { return upstreamtest.New("fake://up/") }

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// openTest opens a cache over up in dir with small chunks.
func openTest(t testing.TB, dir string, up upstream.Upstream, mod ...func(*Config)) *Cache {
	t.Helper()
	cfg := Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10, FlushInterval: 50 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkCatalog(t, c) }) // cold_check_test.go
	return c
}

func mustLookup(t *testing.T, c *Cache, name string) *Image {
	t.Helper()
	e, ok := c.Lookup(name)
	if !ok || e.Image == nil {
		t.Fatalf("%s: not in catalog", name)
	}
	return e.Image
}

func readAll(t *testing.T, c *Cache, img *Image) []byte {
	t.Helper()
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b := make([]byte, img.Size())
	if n, err := h.ReadAt(b, 0); err != nil || n != len(b) {
		t.Fatalf("read %s: n=%d err=%v", img.Name(), n, err)
	}
	return b
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitSums waits until img's chunk sums are recorded: for an image with
// a digest they are made after its verdict (sums_after.go).
func waitSums(t *testing.T, c *Cache, img *Image) {
	t.Helper()
	waitFor(t, func() bool { s, _ := c.idx.Sums(img.id); return len(s) == img.nChunks*sha256.Size })
}
