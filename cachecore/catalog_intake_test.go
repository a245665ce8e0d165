package cachecore

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// blobEntry is an entry named by its digest.
func blobEntry(name string, data []byte, attrs map[string]string) upstream.Entry {
	return upstream.Entry{Name: name, Size: int64(len(data)), Digest: upstreamtest.Digest(data), ByDigest: true,
		Attrs: attrs}
}

// TestByDigestIsOneImage: the names of one digest are one image, like
// hard links: one inode with a link count of its names, one record and
// data file, one hit counter, one pin; the attributes are the first
// name's; all of it survives a restart with the upstream down.
func TestByDigestIsOneImage(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	blob := randomBytes(150<<10, 11)
	names := []string{"b/blobs/sha256/x", "a/t1/disk.qcow2", "a/blobs/sha256/x", "a/t2/disk.qcow2"}
	for i, n := range names {
		up.AddEntryData(blobEntry(n, blob, map[string]string{"media_type": "type-of-" + n, "n": string(rune('0' + i))}), blob)
	}
	up.Add("other.img", randomBytes(10<<10, 12), true)
	c := openTest(t, dir, up)

	check := func(c *Cache) *Image {
		t.Helper()
		img := mustLookup(t, c, names[0])
		for _, n := range names[1:] {
			if other := mustLookup(t, c, n); other != img {
				t.Fatalf("%s and %s are two images", names[0], n)
			}
			if e, _ := c.Lookup(n); e.Ino != img.Ino() {
				t.Fatalf("%s has inode %d, the image %d", n, e.Ino, img.Ino())
			}
		}
		info := img.Info()
		if img.Links() != 4 || info.Links != 4 {
			t.Fatalf("link count %d (info %d), want 4", img.Links(), info.Links)
		}
		if info.Name != "a/blobs/sha256/x" || info.Attrs["media_type"] != "type-of-a/blobs/sha256/x" || info.Attrs["n"] != "2" {
			t.Fatalf("name and attributes are not the first name's: %q %v", info.Name, info.Attrs)
		}
		if l := mustLookup(t, c, "other.img").Links(); l != 1 {
			t.Fatalf("a plain image has %d links", l)
		}
		return img
	}
	img := check(c)
	readAll(t, c, mustLookup(t, c, "a/t1/disk.qcow2"))
	readAll(t, c, mustLookup(t, c, "b/blobs/sha256/x"))
	if up.Fetched() != int64(len(blob)) {
		t.Fatalf("fetched %d bytes for a %d-byte blob under four names", up.Fetched(), len(blob))
	}
	if err := c.Pin("a/t2/disk.qcow2", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if info := mustLookup(t, c, "a/blobs/sha256/x").Info(); info.Hits != 2 || !info.Pinned {
		t.Fatalf("through another name: %d hits, pinned %v; want 2 and true", info.Hits, info.Pinned)
	}
	if ids := dataFiles(t, dir); len(ids) != 1 || ids[0] != img.id {
		t.Fatalf("data files %v, want the one of the blob", ids)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	defer c.Close()
	img = check(c)
	if info := img.Info(); info.Hits != 2 || !info.Pinned || info.State != StateVerified {
		t.Fatalf("after a restart: %+v", info)
	}
	if got := readAll(t, c, mustLookup(t, c, "a/t2/disk.qcow2")); !bytes.Equal(got, blob) {
		t.Fatal("bytes differ after a restart")
	}
}

// TestByDigestNamesChange: names come and go with the listing, the image
// stays (its bytes, its counters); its first name and attributes follow
// the listing.
func TestByDigestNamesChange(t *testing.T) {
	up := newFake()
	blob := randomBytes(70<<10, 13)
	up.AddEntryData(blobEntry("a/blobs/sha256/x", blob, map[string]string{"media_type": "a"}), blob)
	up.AddEntryData(blobEntry("b/blobs/sha256/x", blob, map[string]string{"media_type": "b"}), blob)
	var changes []Change
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.Notifier = changeNotifier(func(ch []Change) { changes = append(changes, ch...) })
	})
	defer c.Close()
	img := mustLookup(t, c, "a/blobs/sha256/x")
	readAll(t, c, img)

	up.Remove("a/blobs/sha256/x")
	up.AddEntryData(blobEntry("c/t/disk", blob, map[string]string{"media_type": "c"}), blob)
	changes = nil
	refreshNow(t, c)
	if _, ok := c.Lookup("a/blobs/sha256/x"); ok {
		t.Fatal("a name that left the listing is still there")
	}
	if mustLookup(t, c, "c/t/disk") != img || mustLookup(t, c, "b/blobs/sha256/x") != img {
		t.Fatal("the blob's other names are another image")
	}
	info := img.Info()
	if info.Name != "b/blobs/sha256/x" || info.Attrs["media_type"] != "b" || info.Links != 2 || info.Hits != 1 ||
		info.CachedBytes != int64(len(blob)) {
		t.Fatalf("after its names changed: %+v", info)
	}
	told := map[Change]bool{}
	for _, ch := range changes {
		told[ch] = true
	}
	for _, want := range []Change{{"a/blobs/sha256", "x"}, {"b/blobs/sha256", "x"}, {"c/t", "disk"}} {
		if !told[want] {
			t.Errorf("the kernel was not told of %v (link count or name): %v", want, changes)
		}
	}
	// An entry of the digest with another size is refused, not the image.
	up.AddEntryData(upstream.Entry{Name: "0/liar", Size: 5, Digest: upstreamtest.Digest(blob), ByDigest: true}, blob[:5])
	refreshNow(t, c)
	if _, ok := c.Lookup("0/liar"); ok {
		t.Fatal("a name whose size is not the digest's was listed")
	}
	if mustLookup(t, c, "b/blobs/sha256/x") != img {
		t.Fatal("the image changed")
	}
}

// evictedNotifier is a Notifier that hears only evictions.
type evictedNotifier func([]string)

func (evictedNotifier) CatalogChanged([]Change)           {}
func (evictedNotifier) PagesDropped(*Image, int64, int64) {}
func (f evictedNotifier) CachedChanged(names []string)    { f(names) }
func (evictedNotifier) Settled(*Image, []string)          {}

// TestEvictionIsToldByEveryName: the kernel may know the inode of an
// image of several names by any of them; an eviction names them all, so
// that none keeps the attributes of the bytes that went.
func TestEvictionIsToldByEveryName(t *testing.T) {
	up := newFake()
	blob := randomBytes(70<<10, 21)
	for _, n := range []string{"a/blobs/sha256/x", "b/t/disk"} {
		up.AddEntryData(blobEntry(n, blob, nil), blob)
	}
	var told []string
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.Notifier = evictedNotifier(func(names []string) { told = append(told, names...) })
	})
	defer c.Close()
	img := mustLookup(t, c, "b/t/disk")
	readAll(t, c, img)
	waitFor(t, func() bool { return !img.InUse() }) // its fetch lets go just after the last chunk lands
	d, err := c.Evict("b/t/disk")
	if err != nil || len(d.Evicted) != 1 || d.Evicted[0] != "a/blobs/sha256/x" {
		t.Fatalf("evict: %+v %v; want the image, by its first name", d, err)
	}
	if len(told) != 2 || told[0] != "a/blobs/sha256/x" || told[1] != "b/t/disk" {
		t.Fatalf("the kernel was told of the eviction of %q, want both names", told)
	}
}

// TestRelistedWhileOpenIsTheSameImage: an image that leaves the catalog
// while open and comes back before it is closed is the same image: the
// last release must not delete the data file and record it shares with
// the listed one (which then read as a hole: zeros where bytes were
// marked present).
func TestRelistedWhileOpenIsTheSameImage(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	data := randomBytes(200<<10, 14)
	up.Add("x.img", data, true)
	c := openTest(t, dir, up)
	defer c.Close()
	h, err := c.Open(mustLookup(t, c, "x.img"))
	if err != nil {
		t.Fatal(err)
	}
	up.Remove("x.img")
	refreshNow(t, c)
	up.Add("x.img", data, true)
	refreshNow(t, c)
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	h.Close() // the last user of the version that left
	if got := readAll(t, c, mustLookup(t, c, "x.img")); !bytes.Equal(got, data) {
		t.Fatal("the listed image reads other bytes once the one that left was closed")
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	v, err := ReadIndexOf(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 1 || v[0] != "x.img" {
		t.Fatalf("index records: %v, want x.img's", v)
	}
}

// ReadIndexOf lists the names of the records of c's index.
func ReadIndexOf(c *Cache) ([]string, error) {
	l, err := c.idx.Load()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range l.Records {
		names = append(names, r.Name)
	}
	return names, nil
}

// TestRetainedImages: with an upstream that retains what leaves its
// catalog, a complete image that leaves stays listed as retired (unpinned,
// evictable) until it is evicted; a partial one and a catalog file leave;
// a listed image takes the name from a retired one; all of it across a
// restart.
func TestRetainedImages(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.SetRetains(true)
	whole, part, taken := randomBytes(100<<10, 15), randomBytes(200<<10, 16), randomBytes(50<<10, 17)
	up.Add("v1/whole.img", whole, true)
	up.Add("v1/part.img", part, true)
	up.Add("v1/taken.img", taken, true)
	up.AddEntry(contentEntry("v1/products.json", []byte(`{"v":1}`), ""))
	c := openTest(t, dir, up)
	readAll(t, c, mustLookup(t, c, "v1/whole.img"))
	readAll(t, c, mustLookup(t, c, "v1/taken.img"))
	h, _ := c.Open(mustLookup(t, c, "v1/part.img"))
	h.ReadAt(make([]byte, 10), 0)
	h.Close()
	if err := c.Pin("v1/whole.img", true); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"v1/whole.img", "v1/taken.img"} {
		img := mustLookup(t, c, n)
		waitFor(t, func() bool { return img.Info().State == StateVerified })
	}

	before := time.Now().Add(-time.Second)
	for _, n := range []string{"v1/whole.img", "v1/part.img", "v1/taken.img", "v1/products.json"} {
		up.Remove(n)
	}
	up.Add("v1/taken.img", randomBytes(60<<10, 18), true) // a new version at the name
	up.Add("v2/whole.img", randomBytes(10<<10, 19), true)
	refreshNow(t, c)
	img := mustLookup(t, c, "v1/whole.img")
	if info := img.Info(); info.Retired.Before(before) || info.Pinned || info.State != StateVerified {
		t.Fatalf("a whole image that left: %+v", info)
	}
	for _, n := range []string{"v1/part.img", "v1/products.json"} {
		if _, ok := c.Lookup(n); ok {
			t.Fatalf("%s left the catalog and is still listed", n)
		}
	}
	if info := mustLookup(t, c, "v1/taken.img").Info(); !info.Retired.IsZero() || info.Size != 60<<10 {
		t.Fatalf("the listed image at a retired one's name: %+v", info)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	img = mustLookup(t, c, "v1/whole.img")
	if info := img.Info(); info.Retired.IsZero() || info.State != StateVerified {
		t.Fatalf("a retired image after a restart: %+v", info)
	}
	if got := readAll(t, c, img); !bytes.Equal(got, whole) {
		t.Fatal("a retired image reads other bytes")
	}
	if _, err := c.Evict("v1/whole.img"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := c.Lookup("v1/whole.img"); return !ok }) // an evicted retired image leaves
	if _, ok := c.Lookup("v1"); !ok {
		t.Fatal("the directory of the listed images went too")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	up.SetDown(nil)
	c = openTest(t, dir, up)
	defer c.Close()
	if _, ok := c.Lookup("v1/whole.img"); ok {
		t.Fatal("an evicted retired image came back after a restart")
	}
	// Listed again: no longer retired.
	up.Add("v1/whole.img", whole, true)
	refreshNow(t, c)
	if info := mustLookup(t, c, "v1/whole.img").Info(); !info.Retired.IsZero() {
		t.Fatalf("listed again, still retired: %+v", info)
	}
}

// TestOldIndexStillOpens: a cache directory whose records were written
// before the catalog fields (by_digest, content, extra: links, attrs,
// retired_at) opens as it did, offline.
func TestOldIndexStillOpens(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	data := randomBytes(64<<10, 20)
	up.Add("os/old.img", data, true)
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "os/old.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	id := img.id
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite its record as imgcache wrote it before (commit e506eb0).
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(dir, "index")).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	old := `{"id":"` + id + `","name":"os/old.img","size":65536,"mtime":"2023-11-14T22:13:20Z","etag":"\"x\"",` +
		`"digest":"` + upstreamtest.Digest(data) + `","chunk_size":65536,"listed":true,"verdict":"verified",` +
		`"hits":1,"last_access":"2024-01-01T00:00:00Z","added":"2024-01-01T00:00:00Z"}`
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("img/"+id), []byte(old)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "os/old.img")
	if info := img.Info(); info.State != StateVerified || info.Hits != 1 || info.Attrs != nil || !info.Retired.IsZero() ||
		info.Links != 1 || img.entry.ByDigest {
		t.Fatalf("an old record: %+v", info)
	}
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("an old record's image reads other bytes")
	}
}
