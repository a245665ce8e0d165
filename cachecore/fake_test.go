package cachecore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// fakeUpstream is an in-memory upstream for unit tests: it counts what it
// serves and can be told to fail, stall or lie.
type fakeUpstream struct {
	mu      sync.Mutex
	images  map[string][]byte
	digests map[string]string // name -> digest to publish ("" none)
	listErr error
	fetchFn func(name string, off, n int64) error // nil: serve
	gate    chan struct{}                         // if set, each fetch waits for a token

	fetched  atomic.Int64 // bytes served
	requests atomic.Int64
}

func newFake() *fakeUpstream {
	return &fakeUpstream{images: map[string][]byte{}, digests: map[string]string{}}
}

func (f *fakeUpstream) add(name string, data []byte, withDigest bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[name] = data
	if withDigest {
		f.digests[name] = digestOf(data)
	} else {
		delete(f.digests, name)
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func (f *fakeUpstream) List(ctx context.Context) ([]upstream.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	var es []upstream.Entry
	for name, b := range f.images {
		es = append(es, upstream.Entry{Name: name, Size: int64(len(b)), Digest: f.digests[name],
			ModTime: time.Unix(1700000000, 0), ETag: fmt.Sprintf("%q", digestOf(b)[7:23])})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	return es, nil
}

func (f *fakeUpstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	f.requests.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	b, ok := f.images[e.Name]
	fn := f.fetchFn
	f.mu.Unlock()
	if !ok {
		return nil, upstream.ErrNotFound
	}
	if fn != nil {
		if err := fn(e.Name, off, n); err != nil {
			return nil, err
		}
	}
	if off+n > int64(len(b)) {
		return nil, fmt.Errorf("range past end")
	}
	f.fetched.Add(n)
	return io.NopCloser(bytes.NewReader(b[off : off+n])), nil
}

func (f *fakeUpstream) URL(name string) string { return "fake://up/" + name }

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
func openTest(t *testing.T, dir string, up upstream.Upstream, mod ...func(*Config)) *Cache {
	t.Helper()
	cfg := Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10, FlushInterval: 50 * time.Millisecond}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
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
