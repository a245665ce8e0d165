package simplestreams

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

// bigProductFile is a product file the size of a large public server's:
// 200 products, 50 versions each, 5 items per version (50,000 items).
func bigProductFile() []byte {
	prods := map[string]any{}
	for p := range 200 {
		versions := map[string]any{}
		for v := range 50 {
			vname := fmt.Sprintf("202401%02d_%02d:00", 1+v%28, v%24)
			items := map[string]any{}
			for i, ft := range []string{"lxd.tar.xz", "squashfs", "root.tar.xz", "disk-kvm.img", "manifest"} {
				items[ft] = map[string]any{"ftype": ft, "size": 1000 + i, "sha256": sumA,
					"path": fmt.Sprintf("images/os%d/rel/amd64/default/%s/file%d", p, vname, i), "combined_squashfs_sha256": sumB}
			}
			versions[vname] = map[string]any{"items": items}
		}
		prods[fmt.Sprintf("os%d:rel:amd64:default", p)] = map[string]any{"aliases": fmt.Sprintf("os%d/rel,os%d", p, p),
			"arch": "amd64", "os": fmt.Sprintf("os%d", p), "release": "rel", "variant": "default", "versions": versions}
	}
	b, _ := json.Marshal(map[string]any{"format": "products:1.0", "products": prods})
	return b
}

func BenchmarkCatalogOfABigProductFile(b *testing.B) {
	body := bigProductFile()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		items, err := parseProducts("p.json", body, DefaultMaxItems)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := catalog(map[string]*httpdir.File{"p.json": {Data: body}}, items); err != nil {
			b.Fatal(err)
		}
	}
}
