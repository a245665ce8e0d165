package simplestreams

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

const sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
const sumB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
const sumC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

func TestParseIndex(t *testing.T) {
	body := `{"format":"index:1.0","index":{
		"b":{"datatype":"image-downloads","path":"streams/v1/images.json","format":"products:1.0","products":["x"]},
		"a":{"datatype":"image-downloads","path":"streams/v1/images.json","products":["y"]},
		"c":{"datatype":"image-ids","path":"streams/v1/ids.json","products":["z"]},
		"d":{"datatype":"image-downloads","path":"streams/v1/empty.json","products":[]},
		"e":{"datatype":"image-downloads","path":"streams/v1/other.json","products":["w"]}}}`
	paths, err := parseIndex([]byte(body), 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(paths, " "); got != "streams/v1/images.json streams/v1/other.json" {
		t.Fatalf("product files %q", got)
	}
}

func TestParseIndexRefuses(t *testing.T) {
	stream := func(path string) string {
		q, _ := json.Marshal(path)
		return fmt.Sprintf(`{"format":"index:1.0","index":{"s":{"datatype":"image-downloads","path":%s,"products":["p"]}}}`, q)
	}
	for _, c := range []struct{ name, body, want string }{
		{"not JSON", `{"format":"index:1.0",`, "not valid JSON"},
		{"trailing garbage", `{"format":"index:1.0"} x`, "not valid JSON"},
		{"wrong type", `{"format":1}`, "format: a JSON number where string belongs"},
		{"other format", `{"format":"products:1.0"}`, `format is "products:1.0", want "index:1.0"`},
		{"no format", `{}`, `format is ""`},
		{"dotdot", stream("../etc/passwd.json"), "unsafe name"},
		{"dotdot inside", stream("streams/../../x.json"), "unsafe name"},
		{"absolute", stream("/streams/v1/images.json"), "not a clean relative path"},
		{"double slash", stream("streams//v1/images.json"), "not a clean relative path"},
		{"NUL", stream("streams/v1/\x00.json"), "control character"},
		{"empty path", stream(""), "empty"},
		{"the index", stream(IndexPath), "the index itself"},
		{"bad stream format", `{"format":"index:1.0","index":{"s":{"datatype":"image-downloads","path":"a.json","format":"products:2.0","products":["p"]}}}`, `format is "products:2.0"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseIndex([]byte(c.body), 10)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), IndexPath+": ") {
				t.Fatalf("error %q does not name the index", err)
			}
		})
	}
}

func TestParseIndexCapsProductFiles(t *testing.T) {
	idx := index{Format: indexFormat, Index: map[string]indexEntry{}}
	for i := range 5 {
		idx.Index[fmt.Sprint(i)] = indexEntry{DataType: imageDownloads, Path: fmt.Sprintf("s/%d.json", i), Products: []string{"p"}}
	}
	b, _ := json.Marshal(idx)
	if _, err := parseIndex(b, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := parseIndex(b, 4); err == nil || !strings.Contains(err.Error(), "more than 4 product files") {
		t.Fatalf("5 product files with a cap of 4: %v", err)
	}
}

// productFile is a product file of one product, with versions of items.
func productFile(versions map[string]map[string]map[string]any) []byte {
	p := map[string]any{"format": "products:1.0", "products": map[string]any{
		"debian:bookworm:amd64:default": map[string]any{
			"aliases": "debian/12,debian/bookworm", "arch": "amd64", "os": "debian", "release": "bookworm",
			"variant": "default", "versions": func() map[string]any {
				vs := map[string]any{}
				for v, items := range versions {
					vs[v] = map[string]any{"items": items}
				}
				return vs
			}(),
		},
	}}
	b, _ := json.Marshal(p)
	return b
}

func TestParseProducts(t *testing.T) {
	body := productFile(map[string]map[string]map[string]any{
		"20240102_05:24": {
			"lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "images/d/2/lxd.tar.xz", "size": 10, "sha256": strings.ToUpper(sumA),
				"combined_squashfs_sha256": sumC, "combined_disk-kvm-img_sha256": sumB, "combined_sha256": "short"},
			"root.squashfs": {"ftype": "squashfs", "path": "images/d/2/root.squashfs", "size": 20, "sha256": sumB},
			"disk.qcow2":    {"ftype": "disk-kvm.img", "path": "images/d/2/disk.qcow2", "size": 0, "sha256": sumB},
		},
		"20240101": {
			"lxd_combined.tar.gz": {"ftype": "lxd_combined.tar.gz", "path": "images/d/1/c.tar.gz", "size": 5, "sha256": sumC},
		},
	})
	items, err := parseProducts("streams/v1/images.json", body, 100)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]item{}
	for _, it := range items {
		names = append(names, it.Name)
		byName[it.Name] = it
	}
	// By version, then item key: a stable order.
	if got := strings.Join(names, " "); got != "images/d/1/c.tar.gz images/d/2/disk.qcow2 images/d/2/lxd.tar.xz images/d/2/root.squashfs" {
		t.Fatalf("items %s", got)
	}
	meta := byName["images/d/2/lxd.tar.xz"]
	if meta.SHA256 != sumA || meta.Size != 10 {
		t.Errorf("meta: %+v", meta)
	}
	wantAttrs := map[string]string{"product": "debian:bookworm:amd64:default", "version": "20240102_05:24", "ftype": "lxd.tar.xz",
		"os": "debian", "release": "bookworm", "arch": "amd64", "variant": "default", "aliases": "debian/12,debian/bookworm",
		"combined_squashfs_sha256": sumC, "combined_disk_kvm_img_sha256": sumB}
	if fmt.Sprint(meta.Attrs) != fmt.Sprint(wantAttrs) {
		t.Errorf("meta attrs\n %v\nwant\n %v", meta.Attrs, wantAttrs)
	}
	if fp := byName["images/d/2/root.squashfs"].Attrs["fingerprint"]; fp != sumC {
		t.Errorf("squashfs fingerprint %q, want the meta's combined_squashfs_sha256", fp)
	}
	if fp := byName["images/d/2/disk.qcow2"].Attrs["fingerprint"]; fp != sumB {
		t.Errorf("disk-kvm.img fingerprint %q, want the meta's combined_disk-kvm-img_sha256", fp)
	}
	if fp := byName["images/d/1/c.tar.gz"].Attrs["fingerprint"]; fp != sumC {
		t.Errorf("unified fingerprint %q, want its own sha256", fp)
	}
	if _, ok := meta.Attrs["fingerprint"]; ok {
		t.Errorf("the metadata tarball has a fingerprint of its own")
	}
	if want := time.Date(2024, 1, 2, 5, 24, 0, 0, time.UTC); !meta.ModTime.Equal(want) {
		t.Errorf("mtime %v, want %v", meta.ModTime, want)
	}
	if want := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC); !byName["images/d/1/c.tar.gz"].ModTime.Equal(want) {
		t.Errorf("mtime of version 20240101: %v", byName["images/d/1/c.tar.gz"].ModTime)
	}
}

func TestParseProductsRefuses(t *testing.T) {
	one := func(it map[string]any) []byte {
		return productFile(map[string]map[string]map[string]any{"20240101": {"root": it}})
	}
	good := func() map[string]any { return map[string]any{"path": "images/a", "size": 1, "sha256": sumA} }
	with := func(k string, v any) []byte {
		it := good()
		if v == nil {
			delete(it, k)
		} else {
			it[k] = v
		}
		return one(it)
	}
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"not JSON", []byte(`{"format":"products:1.0","products":{`), "not valid JSON"},
		{"other format", []byte(`{"format":"index:1.0"}`), `format is "index:1.0", want "products:1.0"`},
		{"dotdot", with("path", "images/../../x"), "unsafe name"},
		{"leading dotdot", with("path", "../x"), "unsafe name"},
		{"absolute", with("path", "/etc/passwd"), "not a clean relative path"},
		{"NUL", with("path", "images/a\x00b"), "control character"},
		{"trailing slash", with("path", "images/a/"), "unsafe name"},
		{"backslash", with("path", `images\a`), "backslash"},
		{"no path", with("path", nil), "empty"},
		{"no size", with("size", nil), "no size"},
		{"negative size", with("size", -1), "outside"},
		{"huge size", with("size", int64(1)<<50), "outside"},
		{"fractional size", with("size", 1.5), "where int64 belongs"},
		{"size as string", with("size", "1"), "where int64 belongs"},
		{"no sha256", with("sha256", nil), "no sha256"},
		{"short sha256", with("sha256", "abc"), "not 64 hex digits"},
		{"not hex", with("sha256", strings.Repeat("g", 64)), "not 64 hex digits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseProducts("streams/v1/images.json", c.body, 10)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "streams/v1/images.json: ") {
				t.Fatalf("error %q does not name the product file", err)
			}
		})
	}
}

func TestParseProductsCapsItems(t *testing.T) {
	items := map[string]map[string]any{}
	for i := range 3 {
		items[fmt.Sprint(i)] = map[string]any{"path": fmt.Sprintf("i/%d", i), "size": 1, "sha256": sumA}
	}
	body := productFile(map[string]map[string]map[string]any{"20240101": items})
	if _, err := parseProducts("p.json", body, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := parseProducts("p.json", body, 2); err == nil || !strings.Contains(err.Error(), "more than 2 items") {
		t.Fatalf("3 items with a cap of 2: %v", err)
	}
}

func TestAttrsLeaveOutWhatCannotBeShown(t *testing.T) {
	prod := &product{OS: "deb\x1bian", Release: "bookworm", Aliases: strings.Repeat("a,", 600), Arch: "amd64"}
	pi := &productItem{FType: "squashfs\u202e"}
	meta := &productItem{CombinedSquashfsSHA256: "not a hash"}
	a := attrsOf("p", "v", prod, pi, meta, attrChecker())
	for _, k := range []string{"os", "aliases", "ftype", "fingerprint"} {
		if v, ok := a[k]; ok {
			t.Errorf("attribute %s = %q kept", k, v)
		}
	}
	if a["release"] != "bookworm" || a["arch"] != "amd64" {
		t.Errorf("good attributes dropped: %v", a)
	}
}

func TestVersionTime(t *testing.T) {
	for v, want := range map[string]time.Time{
		"20240102_05:24":   time.Date(2024, 1, 2, 5, 24, 0, 0, time.UTC),
		"20240102":         time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"20240102.1":       time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"20240102_99:99":   time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
		"release-20240102": {},
		"2024":             {},
		"20241399":         {},
		"":                 {},
	} {
		if got := versionTime(v); !got.Equal(want) {
			t.Errorf("versionTime(%q) = %v, want %v", v, got, want)
		}
	}
}
