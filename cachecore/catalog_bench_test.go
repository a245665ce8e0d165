package cachecore

import (
	"context"
	"fmt"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// BenchmarkRefreshUnchanged100k: a refresh of a 100,000-image catalog in
// which nothing changed (the common case: every --catalog-ttl), the
// upstream's List aside.
func BenchmarkRefreshUnchanged100k(b *testing.B) {
	up := newFake()
	for i := range 100_000 {
		up.AddEntry(upstream.Entry{Name: fmt.Sprintf("d%02d/img%06d.raw", i%100, i), Size: 1 << 20,
			Digest: fmt.Sprintf("sha256:%064x", i)})
	}
	c, err := Open(Config{Dir: b.TempDir(), Upstream: up, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.refresh(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
