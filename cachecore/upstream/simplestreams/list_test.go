package simplestreams

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
	"github.com/imgcache/imgcache/internal/teststreams"
)

const MiB = 1 << 20

// smallSpec is a tree of three products (a container, a VM, a unified
// image) of two versions each, items of 1 to 3 MiB.
func smallSpec() teststreams.Spec { return scaledSpec(MiB) }

// scaledSpec is smallSpec with items of 1 to 3 units.
func scaledSpec(MiB int64) teststreams.Spec {
	return teststreams.Spec{Seed: 7, Products: []teststreams.Product{
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "default", Aliases: []string{"debian/12", "debian/bookworm"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: teststreams.Container, MetaSize: MiB, RootSize: 3 * MiB},
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "cloud", Aliases: []string{"debian/12/cloud"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: teststreams.VM, MetaSize: MiB / 2, RootSize: 2 * MiB},
		{OS: "alpine", Release: "3.19", Arch: "arm64", Variant: "default", Aliases: []string{"alpine/3.19"},
			Versions: []string{"20240101_13:00", "20240102_13:00"}, Kind: teststreams.Unified, MetaSize: MiB + 17},
	}}
}

func serveTree(t *testing.T, spec teststreams.Spec) (*teststreams.Tree, *teststreams.Nginx) {
	t.Helper()
	tree, err := teststreams.Write(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return tree, teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{})
}

func newUpstream(t *testing.T, rawURL string, o Options) *Upstream {
	t.Helper()
	u, err := New(rawURL, o)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func byName(entries []upstream.Entry) map[string]upstream.Entry {
	m := map[string]upstream.Entry{}
	for _, e := range entries {
		m[e.Name] = e
	}
	return m
}

func readAll(t *testing.T, u *Upstream, e upstream.Entry, off, n int64) []byte {
	t.Helper()
	r, err := u.Fetch(context.Background(), e, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestListMirrorsTheTree(t *testing.T) {
	tree, ng := serveTree(t, smallSpec())
	u := newUpstream(t, "simplestreams+"+ng.URL, Options{})
	entries, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(tree.Items)+2 {
		t.Fatalf("%d entries, want %d items and 2 JSON files", len(entries), len(tree.Items))
	}
	got := byName(entries)
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			t.Errorf("entry refused by the cache: %v", err)
		}
	}
	// The JSON files, byte for byte.
	for _, name := range []string{teststreams.IndexPath, teststreams.ProductsPath} {
		want, err := os.ReadFile(filepath.Join(tree.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		e := got[name]
		if !bytes.Equal(e.Content, want) || e.Size != int64(len(want)) || e.ModTime.IsZero() {
			t.Errorf("%s: size %d, mtime %v, ETag %q, content equal: %v", name, e.Size, e.ModTime, e.ETag, bytes.Equal(e.Content, want))
		}
		if b := readAll(t, u, e, 3, e.Size-3); !bytes.Equal(b, want[3:]) {
			t.Errorf("%s: Fetch does not give the listed bytes", name)
		}
	}
	// Every item, with its size and digest.
	for _, it := range tree.Items {
		e, ok := got[it.Path]
		switch {
		case !ok:
			t.Errorf("item %s not listed", it.Path)
		case e.Size != it.Size || e.Digest != "sha256:"+it.SHA256 || !e.ByDigest:
			t.Errorf("item %s: %+v, want size %d and sha256 %s", it.Path, e, it.Size, it.SHA256)
		case e.Attrs["ftype"] != it.FType || e.Attrs["product"] != it.Product || e.Attrs["version"] != it.Version:
			t.Errorf("item %s: attrs %v", it.Path, e.Attrs)
		}
	}
	// LXD's fingerprint: sha256 of the metadata's bytes then the root's,
	// computed here from the files nginx serves.
	for _, img := range tree.Images {
		h := sha256.New()
		files := []*teststreams.Item{img.Meta}
		if img.Root != nil {
			files = append(files, img.Root)
		}
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(tree.Dir, f.Path))
			if err != nil {
				t.Fatal(err)
			}
			h.Write(b)
		}
		fp := hex.EncodeToString(h.Sum(nil))
		last := files[len(files)-1]
		if a := got[last.Path].Attrs["fingerprint"]; a != fp || img.Fingerprint != fp {
			t.Errorf("%s: fingerprint %q (generator %q), want %q", last.Path, a, img.Fingerprint, fp)
		}
		if img.Root != nil {
			if a := got[img.Meta.Path].Attrs; a["combined_squashfs_sha256"] != fp && a["combined_disk_kvm_img_sha256"] != fp {
				t.Errorf("%s: no combined hash %s in %v", img.Meta.Path, fp, a)
			}
		}
		if a := got[last.Path].Attrs; a["aliases"] != strings.Join(img.Product.Aliases, ",") || a["os"] != img.Product.OS ||
			a["release"] != img.Product.Release || a["arch"] != img.Product.Arch || a["variant"] != img.Product.Variant {
			t.Errorf("%s: product attrs %v", last.Path, a)
		}
	}
	// A range of an item, through httpdir.
	it := tree.Items[1]
	want, _ := os.ReadFile(filepath.Join(tree.Dir, it.Path))
	if b := readAll(t, u, got[it.Path], 12345, 100000); !bytes.Equal(b, want[12345:112345]) {
		t.Errorf("range of %s differs from the file", it.Path)
	}
	if u.URL(it.Path) != ng.URL+it.Path {
		t.Errorf("URL %q", u.URL(it.Path))
	}
}

func TestListAgainAsksOnlyWhetherTheJSONChanged(t *testing.T) {
	tree, ng := serveTree(t, smallSpec())
	// Published an hour ago: a file modified within a second of a reply
	// is fetched whole again (see httpdir.File.Young).
	for _, name := range []string{teststreams.IndexPath, teststreams.ProductsPath} {
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(filepath.Join(tree.Dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	u := newUpstream(t, ng.URL, Options{})
	first, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := len(ng.WaitRequests(2))
	second, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	reqs := ng.WaitRequests(before + 2)[before:]
	if len(reqs) != 2 {
		t.Fatalf("a second List made %d requests, want 2: %v", len(reqs), reqs)
	}
	for _, r := range reqs {
		if r.Status != 304 || r.Bytes != 0 {
			t.Errorf("second List: %+v, want 304 without a body", r)
		}
	}
	if len(first) != len(second) {
		t.Fatalf("%d entries then %d", len(first), len(second))
	}
	for i := range first {
		a, b := first[i], second[i]
		if a.Name != b.Name || a.Digest != b.Digest || !bytes.Equal(a.Content, b.Content) {
			t.Fatalf("entry %d: %q %s then %q %s", i, a.Name, a.Digest, b.Name, b.Digest)
		}
	}

	// A new upstream told the cached catalog asks the same way.
	fresh := newUpstream(t, ng.URL, Options{})
	fresh.Remember(upstream.KnownList(first))
	before += 2
	if _, err := fresh.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range ng.WaitRequests(before + 2)[before:] {
		if r.Status != 304 {
			t.Errorf("List after Remember: %+v, want 304", r)
		}
	}
}

func TestListFollowsAVersionAddedAndOneRemoved(t *testing.T) {
	spec := smallSpec()
	tree, ng := serveTree(t, spec)
	u := newUpstream(t, ng.URL, Options{})
	if _, err := u.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := tree.Images[0] // debian default 20240101_05:24
	spec.Products[0].Versions = []string{"20240102_05:24", "20240103_05:24"}
	tree2, err := teststreams.Write(tree.Dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := byName(entries)
	if len(entries) != len(tree2.Items)+2 {
		t.Fatalf("%d entries, want %d", len(entries), len(tree2.Items)+2)
	}
	for _, it := range tree2.Items {
		if e, ok := got[it.Path]; !ok || e.Digest != "sha256:"+it.SHA256 {
			t.Errorf("item %s: %+v", it.Path, e)
		}
	}
	for _, gone := range []string{old.Meta.Path, old.Root.Path} {
		if _, ok := got[gone]; ok {
			t.Errorf("removed item %s still listed", gone)
		}
	}
	products, _ := os.ReadFile(filepath.Join(tree.Dir, teststreams.ProductsPath))
	if !bytes.Equal(got[teststreams.ProductsPath].Content, products) {
		t.Errorf("product file not the new one")
	}
}

// A 256 MiB item: offsets past 2^28 come back right.
func TestFetchOfALargeItem(t *testing.T) {
	spec := teststreams.Spec{Seed: 3, Products: []teststreams.Product{{OS: "big", Release: "1", Arch: "amd64", Variant: "default",
		Versions: []string{"20240101"}, Kind: teststreams.Container, MetaSize: 4096, RootSize: 256 * MiB}}}
	tree, ng := serveTree(t, spec)
	u := newUpstream(t, ng.URL, Options{})
	entries, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	root := tree.Images[0].Root
	e := byName(entries)[root.Path]
	if e.Size != 256*MiB {
		t.Fatalf("size %d", e.Size)
	}
	off, n := int64(256*MiB-MiB-7), int64(MiB+7)
	want := make([]byte, n)
	f, err := os.Open(filepath.Join(tree.Dir, root.Path))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(want, off); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, u, e, off, n); !bytes.Equal(b, want) {
		t.Fatal("the last MiB of a 256 MiB item differs from the file")
	}
	if _, err := u.Fetch(context.Background(), e, off, n+1); err == nil {
		t.Fatal("a range past the end was fetched")
	}
}

func TestNewAndCutPrefix(t *testing.T) {
	for raw, want := range map[string]string{
		"simplestreams+https://h/x/": "https://h/x/",
		"simplestreams+http://h":     "http://h",
		"https://h/":                 "https://h/",
		"simplestreams+ftp://h/":     "",
		"simplestreams+":             "",
	} {
		got, ok := CutPrefix(raw)
		if ok != strings.HasPrefix(raw, Prefix) || ok && got != want {
			if want != "" || ok {
				t.Errorf("CutPrefix(%q) = %q, %v", raw, got, ok)
			}
		}
		u, err := New(raw, Options{})
		if want == "" {
			if err == nil {
				t.Errorf("New(%q) accepted", raw)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q): %v", raw, err)
			continue
		}
		if !strings.HasSuffix(want, "/") {
			want += "/"
		}
		if u.URL("streams/v1/index.json") != want+"streams/v1/index.json" {
			t.Errorf("New(%q).URL = %q", raw, u.URL("streams/v1/index.json"))
		}
	}
	u, err := New("simplestreams+https://user:secret@h/", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := u.URL("a"); strings.Contains(s, "secret") || strings.Contains(s, "user") {
		t.Errorf("URL shows the credentials: %q", s)
	}
	if _, err := New("simplestreams+https://user:secret@h/%zz", Options{}); err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("a bad URL: %v", err)
	}
}

func TestProbe(t *testing.T) {
	ctx := context.Background()
	tree, ng := serveTree(t, smallSpec())
	if ok, err := Probe(ctx, ng.URL, Options{}); !ok || err != nil {
		t.Errorf("Probe of a simplestreams tree: %v, %v", ok, err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "a.img"), []byte("x"), 0o644)
	plain := teststreams.StartNginx(t, other, teststreams.NginxOptions{})
	if ok, err := Probe(ctx, plain.URL, Options{}); ok || err != nil {
		t.Errorf("Probe of a plain directory: %v, %v", ok, err)
	}
	if err := teststreams.WriteFile(other, IndexPath, []byte(`{"format":"something else"}`)); err != nil {
		t.Fatal(err)
	}
	if ok, err := Probe(ctx, plain.URL, Options{}); ok || err != nil {
		t.Errorf("Probe of a directory with another index.json: %v, %v", ok, err)
	}
	ng.Stop()
	if ok, err := Probe(ctx, ng.URL, Options{}); ok || err == nil {
		t.Errorf("Probe of a stopped server: %v, %v", ok, err)
	}
	_ = tree
	if !slices.Contains([]string{"http", "https"}, strings.SplitN(ng.URL, ":", 2)[0]) {
		t.Fatal(ng.URL)
	}
}

func TestListOverTLS13(t *testing.T) {
	tree, err := teststreams.Write(t.TempDir(), scaledSpec(1024))
	if err != nil {
		t.Fatal(err)
	}
	cert := teststreams.NewCert(t)
	ng := teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{Cert: cert})
	if !strings.HasPrefix(ng.URL, "https://") {
		t.Fatal(ng.URL)
	}
	u := newUpstream(t, "simplestreams+"+ng.URL, Options{})
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("List without the test's CA: %v", err)
	}
	u = newUpstream(t, "simplestreams+"+ng.URL, Options{HTTP: httpdir.Options{CAFile: cert.CAFile}})
	entries, err := u.List(context.Background())
	if err != nil || len(entries) != len(tree.Items)+2 {
		t.Fatalf("List with the CA: %d entries, %v", len(entries), err)
	}
}
