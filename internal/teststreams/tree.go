// Package teststreams makes simplestreams trees for tests, laid out as
// LXD and Incus image servers publish them, and serves them with a real
// nginx on 127.0.0.1 (over TLS 1.3 if asked).
//
// File contents come from a seeded PRNG, so a tree of hundreds of MiB is
// written at disk speed, the same spec always gives the same bytes, and
// the combined fingerprints are the ones LXD computes: for a split
// image, the sha256 of the metadata tarball's bytes followed by the root
// file's.
package teststreams

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Kind is what files a version of a product has.
type Kind int

const (
	// Container: lxd.tar.xz and rootfs.squashfs (ftype squashfs).
	Container Kind = iota
	// VM: lxd.tar.xz and disk.qcow2 (ftype disk-kvm.img).
	VM
	// Unified: one lxd_combined.tar.gz, its own fingerprint.
	Unified
)

// Product is one product of a spec: images/<os>/<release>/<arch>/<variant>/<version>/.
type Product struct {
	OS, Release, Arch, Variant string
	Aliases                    []string // "debian/12", "debian/bookworm"
	Versions                   []string // "20240101_05:24": LXD reads a date from the first 8 characters
	Kind                       Kind
	MetaSize, RootSize         int64 // RootSize is unused for Unified
}

// Name is the product's name in the product file: "os:release:arch:variant".
func (p Product) Name() string {
	return strings.Join([]string{p.OS, p.Release, p.Arch, p.Variant}, ":")
}

func (p Product) dir(version string) string {
	return path.Join("images", p.OS, p.Release, p.Arch, p.Variant, version)
}

// Spec says what a tree holds.
type Spec struct {
	Seed     uint64 // the same seed and path give the same bytes
	Products []Product
}

// Item is one file a product file names.
type Item struct {
	Key     string // its key in the version's items ("root.squashfs")
	Path    string
	Size    int64
	SHA256  string
	FType   string
	Product string
	Version string
}

// Image is one LXD image: a version's metadata and root file, or its
// unified tarball (Root nil).
type Image struct {
	Product     Product
	Version     string
	Fingerprint string
	Meta, Root  *Item
}

// Tree is a simplestreams tree written in Dir.
type Tree struct {
	Dir    string
	Items  []Item
	Images []Image
}

// Paths of the JSON files.
const (
	IndexPath    = "streams/v1/index.json"
	ProductsPath = "streams/v1/images.json"
)

// Item returns the item at path p; it panics if there is none.
func (t *Tree) Item(p string) Item {
	for _, it := range t.Items {
		if it.Path == p {
			return it
		}
	}
	panic(fmt.Sprintf("teststreams: no item %q", p))
}

// Write makes the tree of spec in dir: every item, images.json and
// index.json. Over an existing tree it leaves files whose size is right
// as they are (the bytes of a path never change for a seed) and deletes
// the files below images/ that spec no longer names, as a server drops
// an old version.
func Write(dir string, spec Spec) (*Tree, error) {
	t := &Tree{Dir: dir}
	type jsonItem map[string]any
	products := map[string]any{}
	var names []string
	for _, p := range spec.Products {
		versions := map[string]any{}
		for _, v := range p.Versions {
			items, img, err := writeVersion(dir, spec.Seed, p, v)
			if err != nil {
				return nil, err
			}
			t.Images = append(t.Images, img)
			jitems := map[string]any{}
			for _, it := range items {
				ji := jsonItem{"ftype": it.FType, "path": it.Path, "size": it.Size, "sha256": it.SHA256}
				if it.FType == "lxd.tar.xz" {
					switch p.Kind {
					case Container:
						ji["combined_squashfs_sha256"] = img.Fingerprint
					case VM:
						ji["combined_disk-kvm-img_sha256"] = img.Fingerprint
					}
				}
				jitems[it.Key] = ji
				t.Items = append(t.Items, it)
			}
			versions[v] = map[string]any{"items": jitems}
		}
		products[p.Name()] = map[string]any{
			"aliases": strings.Join(p.Aliases, ","), "arch": p.Arch, "os": p.OS,
			"release": p.Release, "release_title": p.Release, "variant": p.Variant, "versions": versions,
		}
		names = append(names, p.Name())
	}
	slices.Sort(names)
	if err := WriteJSON(dir, ProductsPath, map[string]any{
		"content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": products,
	}); err != nil {
		return nil, err
	}
	if err := WriteJSON(dir, IndexPath, map[string]any{
		"format": "index:1.0",
		"index": map[string]any{"images": map[string]any{
			"datatype": "image-downloads", "path": ProductsPath, "format": "products:1.0", "products": names,
		}},
	}); err != nil {
		return nil, err
	}
	return t, removeStale(dir, t.Items)
}

// WriteJSON writes v as JSON at the tree path p (replacing the file by a
// rename, as a server publishes).
func WriteJSON(dir, p string, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	return WriteFile(dir, p, append(b, '\n'))
}

// WriteFile writes b at the tree path p by a rename.
func WriteFile(dir, p string, b []byte) error {
	full := filepath.Join(dir, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	tmp := full + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, full)
}

func writeVersion(dir string, seed uint64, p Product, v string) ([]Item, Image, error) {
	d := p.dir(v)
	mk := func(key, ftype string, size int64) Item {
		return Item{Key: key, Path: path.Join(d, key), Size: size, FType: ftype, Product: p.Name(), Version: v}
	}
	img := Image{Product: p, Version: v}
	combined := sha256.New()
	var items []Item
	switch p.Kind {
	case Unified:
		items = []Item{mk("lxd_combined.tar.gz", "lxd_combined.tar.gz", p.MetaSize)}
	case Container:
		items = []Item{mk("lxd.tar.xz", "lxd.tar.xz", p.MetaSize), mk("root.squashfs", "squashfs", p.RootSize)}
	case VM:
		items = []Item{mk("lxd.tar.xz", "lxd.tar.xz", p.MetaSize), mk("disk.qcow2", "disk-kvm.img", p.RootSize)}
	default:
		return nil, img, fmt.Errorf("teststreams: product %s: unknown kind %d", p.Name(), p.Kind)
	}
	for i := range items {
		sum, err := writeItem(dir, seed, items[i], combined)
		if err != nil {
			return nil, img, err
		}
		items[i].SHA256 = sum
	}
	img.Meta = &items[0]
	img.Fingerprint = hex.EncodeToString(combined.Sum(nil))
	if len(items) == 2 {
		img.Root = &items[1]
	}
	return items, img, nil
}

// writeItem writes the bytes of it (unless a file of its size is there)
// and returns their sha256; they are also written to combined.
func writeItem(dir string, seed uint64, it Item, combined hash.Hash) (string, error) {
	full := filepath.Join(dir, filepath.FromSlash(it.Path))
	var w io.Writer = io.Discard
	if fi, err := os.Stat(full); err != nil || fi.Size() != it.Size {
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return "", err
		}
		f, err := os.Create(full + ".tmp")
		if err != nil {
			return "", err
		}
		defer f.Close()
		w = f
	}
	sum := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(w, sum, combined), Content(seed, it.Path), it.Size); err != nil {
		return "", err
	}
	if f, ok := w.(*os.File); ok {
		if err := f.Close(); err != nil {
			return "", err
		}
		if err := os.Rename(f.Name(), full); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(sum.Sum(nil)), nil
}

// Content is the endless stream of bytes of the file at tree path p.
func Content(seed uint64, p string) io.Reader {
	var key [32]byte
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, seed)
	h.Write([]byte(p))
	copy(key[:], h.Sum(nil))
	return rand.NewChaCha8(key)
}

// removeStale deletes files below images/ that are not items, and the
// directories left empty.
func removeStale(dir string, items []Item) error {
	keep := map[string]bool{}
	for _, it := range items {
		keep[it.Path] = true
	}
	root := filepath.Join(dir, "images")
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !keep[filepath.ToSlash(rel)] {
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails, as it should, unless empty
	}
	return nil
}
