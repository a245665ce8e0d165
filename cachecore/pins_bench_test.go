package cachecore

import (
	"context"
	"fmt"
	"testing"

	"github.com/imgcache/imgcache/cachecore/index"
)

// BenchmarkApplyPins: what pin rules add to a refresh of a mirror of
// 25,000 products (50,000 versions, 100,000 items), under Cache.mu: a
// glob and an alias that select a few items, and a glob that selects the
// newest version of every product (50,000 items).
func BenchmarkApplyPins(b *testing.B) {
	up := newFake()
	for p := range 25_000 {
		product := fmt.Sprintf("os%d:r:amd64:default", p)
		for _, v := range []string{"20240101_05:24", "20240102_05:24"} {
			streamItems(up, product, v, fmt.Sprintf("os%d/1", p))
		}
	}
	c := openTest(b, b.TempDir(), up, withProducts, withLifecycle(Lifecycle{Prefetchers: -1}))
	defer c.Close()
	entries, err := up.List(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		rules []PinRule
	}{
		{"glob+alias", []PinRule{{PinGlob, "images/os1/*"}, {PinAlias, "os2/1"}}},
		{"every-product", []PinRule{{PinGlob, "images/*"}}},
	} {
		for _, r := range bc.rules {
			if _, err := c.AddPin(r); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			t := c.tree.Load()
			for b.Loop() {
				var batch index.Batch
				c.mu.Lock()
				c.applyPinsLocked(entries, t, &batch)
				c.mu.Unlock()
			}
		})
	}
}
