package cachecore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgcache/imgcache/cachecore/store"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// contentEntry is a catalog file: an entry with its Content.
func contentEntry(name string, content []byte, etag string) upstream.Entry {
	return upstream.Entry{Name: name, Size: int64(len(content)), Digest: upstreamtest.Digest(content),
		Content: content, ETag: etag}
}

// refreshNow runs one catalog refresh and fails the test on an error.
func refreshNow(t *testing.T, c *Cache) {
	t.Helper()
	if err := c.refresh(context.Background()); err != nil {
		t.Fatalf("refresh: %v", err)
	}
}

// dataFiles lists the IDs of the data files of the cache in dir.
func dataFiles(t *testing.T, dir string) []string {
	t.Helper()
	var ids []string
	err := filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			ids = append(ids, d.Name())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestContentIsStoredAtIntake: a catalog file is a complete, verified
// data file as soon as it is listed, counted in the usage; it is read
// without a fetch, the image keeps no copy of its bytes, and after a
// restart with the upstream down it is still there and still no fetch.
func TestContentIsStoredAtIntake(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	doc := randomBytes(200<<10+7, 1) // 4 chunks of 64 KiB and a bit
	up.AddEntry(contentEntry("streams/v1/index.json", doc, `"v1"`))
	up.Add("images/disk.img", randomBytes(100<<10, 2), true)

	c := openTest(t, dir, up)
	img := mustLookup(t, c, "streams/v1/index.json")
	if info := img.Info(); info.State != StateVerified || info.CachedBytes != int64(len(doc)) {
		t.Fatalf("a catalog file after intake: state %s, %d bytes cached", info.State, info.CachedBytes)
	}
	if img.entry.Content != nil {
		t.Error("the image keeps the Content bytes in memory")
	}
	if got := readAll(t, c, img); !bytes.Equal(got, doc) {
		t.Fatal("a catalog file reads other bytes than its Content")
	}
	if n := up.RequestsFor("streams/v1/index.json"); n != 0 {
		t.Fatalf("a catalog file was fetched %d times", n)
	}
	checkUsage(t, c, dir)
	if u := c.Usage(); u.CacheBytes < int64(len(doc)) {
		t.Fatalf("usage %d does not count the catalog file's %d bytes", u.CacheBytes, len(doc))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	up.SetDown(errors.New("upstream down"))
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "streams/v1/index.json")
	if info := img.Info(); info.State != StateVerified {
		t.Fatalf("after a restart: state %s", info.State)
	}
	if got := readAll(t, c, img); !bytes.Equal(got, doc) {
		t.Fatal("a catalog file reads other bytes after a restart")
	}
	if n := up.RequestsFor("streams/v1/index.json"); n != 0 {
		t.Fatalf("a catalog file was fetched %d times", n)
	}
	checkUsage(t, c, dir)
}

// TestContentNewVersion: new bytes at the same name are a new image
// (new inode); a reader of the old one keeps its bytes; the old file goes
// once it is closed.
func TestContentNewVersion(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	v1, v2 := []byte(`{"v":1}`), []byte(`{"v":2,"more":true}`)
	up.AddEntry(contentEntry("a/index.json", v1, ""))
	c := openTest(t, dir, up)
	defer c.Close()
	old := mustLookup(t, c, "a/index.json")
	h, err := c.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	up.AddEntry(contentEntry("a/index.json", v2, ""))
	refreshNow(t, c)
	cur := mustLookup(t, c, "a/index.json")
	if cur == old || cur.Ino() == old.Ino() {
		t.Fatal("new bytes at the same name kept the image and its inode")
	}
	if got := readAll(t, c, cur); !bytes.Equal(got, v2) {
		t.Fatalf("new version reads %q", got)
	}
	b := make([]byte, len(v1))
	if n, err := h.ReadAt(b, 0); err != nil || !bytes.Equal(b[:n], v1) {
		t.Fatalf("the open old version reads %q, %v", b[:n], err)
	}
	h.Close()
	if ids := dataFiles(t, dir); len(ids) != 1 || ids[0] != cur.id {
		t.Fatalf("data files after the old version closed: %v, want only %s", ids, cur.id)
	}
	if up.Requests() != 0 {
		t.Fatalf("%d fetches of catalog files", up.Requests())
	}
}

// TestContentThatCannotBeStoredRefusesTheRefresh: when a catalog file
// does not fit (here: the size limit, with nothing evictable), the whole
// listing is refused: the old tree stays, with its old catalog file, the
// error is the catalog's, and nothing of the refused listing is left on
// disk or on the books.
func TestContentThatCannotBeStoredRefusesTheRefresh(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	v1 := randomBytes(100<<10, 3)
	up.AddEntry(contentEntry("streams/v1/index.json", v1, ""))
	up.Add("items/a.img", randomBytes(10<<10, 4), true)
	c := openTest(t, dir, up, func(cfg *Config) { cfg.MaxSize = 1 << 20 })
	defer c.Close()
	before := c.tree.Load()
	usage := c.Usage().CacheBytes

	up.AddEntry(contentEntry("streams/v1/index.json", randomBytes(2<<20, 5), "")) // over the limit
	for i := range 20 {                                                           // these fit: stored, then removed
		up.AddEntry(contentEntry(fmt.Sprintf("streams/v1/p%d.json", i), randomBytes(4<<10, uint64(100+i)), ""))
	}
	up.Add("items/b.img", randomBytes(10<<10, 6), true)
	err := c.refresh(context.Background())
	if !errors.Is(err, ErrNoRoom) {
		t.Fatalf("refresh with a catalog file over the limit: %v, want ErrNoRoom", err)
	}
	if c.tree.Load() != before {
		t.Fatal("a refused listing changed the tree")
	}
	if _, ok := c.Lookup("items/b.img"); ok {
		t.Fatal("an image of a refused listing is listed")
	}
	if got := readAll(t, c, mustLookup(t, c, "streams/v1/index.json")); !bytes.Equal(got, v1) {
		t.Fatal("the old catalog file changed")
	}
	if st := c.CatalogStatus(); st.Err == nil || !errors.Is(st.Err, ErrNoRoom) {
		t.Fatalf("catalog status after a refused listing: %+v", st)
	}
	if got := c.Usage().CacheBytes; got != usage {
		t.Fatalf("usage %d after a refused listing, was %d", got, usage)
	}
	if ids := dataFiles(t, dir); len(ids) != 1 {
		t.Fatalf("data files after a refused listing: %v", ids)
	}
	checkUsage(t, c, dir)
}

// TestContentIsNeverEvicted: eviction, a prune and EvictAll leave catalog
// files alone; Evict of one says why.
func TestContentIsNeverEvicted(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	doc := randomBytes(300<<10, 7)
	up.AddEntry(contentEntry("streams/v1/index.json", doc, ""))
	up.Add("items/a.img", randomBytes(300<<10, 8), true)
	c := openTest(t, dir, up, func(cfg *Config) { cfg.MaxSize = 1 << 20 })
	defer c.Close()
	readAll(t, c, mustLookup(t, c, "items/a.img"))
	if _, err := c.Evict("streams/v1/index.json"); !errors.Is(err, ErrCatalogFile) || !errors.Is(err, ErrPinned) {
		t.Fatalf("evicting a catalog file: %v", err)
	}
	if _, err := c.EvictAll(); err != nil {
		t.Fatal(err)
	}
	c.PruneNow(context.Background())
	img := mustLookup(t, c, "streams/v1/index.json")
	if info := img.Info(); info.State != StateVerified || info.CachedBytes != int64(len(doc)) {
		t.Fatalf("a catalog file after EvictAll and a prune: %+v", info)
	}
	if info := mustLookup(t, c, "items/a.img").Info(); info.CachedBytes != 0 {
		t.Fatalf("an image was not evicted: %+v", info)
	}
	// A read that needs room evicts other images, never the catalog file.
	up.Add("items/b.img", randomBytes(600<<10, 9), true)
	refreshNow(t, c)
	readAll(t, c, mustLookup(t, c, "items/b.img"))
	readAll(t, c, mustLookup(t, c, "items/a.img"))
	if info := img.Info(); info.CachedBytes != int64(len(doc)) {
		t.Fatalf("a catalog file after reads that needed room: %+v", info)
	}
	checkUsage(t, c, dir)
}

// TestRememberGetsContent: at start the upstream is told the catalog's
// entries with their ETags and, for catalog files, their bytes (read from
// the data files), so that it can ask only whether they changed. A
// catalog file's ETag is the last listing's: an upstream gives none for a
// file just written.
func TestRememberGetsContent(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	doc := []byte(`{"index":1}`)
	blob := randomBytes(70<<10, 10)
	up.AddEntry(contentEntry("streams/v1/index.json", doc, ""))
	up.AddEntryData(upstream.Entry{Name: "a/blobs/sha256/x", Size: int64(len(blob)), Digest: upstreamtest.Digest(blob),
		ByDigest: true, Attrs: map[string]string{"media_type": "disk"}}, blob)
	up.AddEntryData(upstream.Entry{Name: "b/blobs/sha256/x", Size: int64(len(blob)), Digest: upstreamtest.Digest(blob),
		ByDigest: true}, blob)
	c := openTest(t, dir, up)
	up.AddEntry(contentEntry("streams/v1/index.json", doc, `"etag-1"`)) // no longer new: a validator
	refreshNow(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	defer c.Close()
	told := up.Remembered()
	got := map[string]upstream.Entry{}
	for _, e := range told[len(told)-1] {
		got[e.Name] = e
	}
	if e := got["streams/v1/index.json"]; !bytes.Equal(e.Content, doc) || e.ETag != `"etag-1"` || e.Digest != upstreamtest.Digest(doc) {
		t.Fatalf("remembered catalog file: %+v", e)
	}
	for _, name := range []string{"a/blobs/sha256/x", "b/blobs/sha256/x"} {
		if e := got[name]; !e.ByDigest || e.Content != nil || e.Digest != upstreamtest.Digest(blob) || e.Size != int64(len(blob)) {
			t.Fatalf("remembered %s: %+v", name, e)
		}
	}
	if len(got) != 3 {
		t.Fatalf("remembered %d entries, want 3", len(got))
	}
}

// TestDataFilePutLeavesNothingHalfWritten: a work file left by a crash
// is removed at start; Put replaces a data file whole.
func TestDataFilePutLeavesNothingHalfWritten(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.AddEntry(contentEntry("index.json", []byte("{}"), ""))
	c := openTest(t, dir, up)
	id := mustLookup(t, c, "index.json").id
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "data", store.DataName(id)+".work")
	if err := os.WriteFile(work, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up)
	defer c.Close()
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a work file left by a crash is still there: %v", err)
	}
	if got := readAll(t, c, mustLookup(t, c, "index.json")); string(got) != "{}" {
		t.Fatalf("read %q", got)
	}
}
