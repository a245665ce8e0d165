package cachecore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/simplestreams"
)

// pinnedNames lists the images of the catalog that show pinned.
func pinnedNames(c *Cache) []string {
	var names []string
	for i := range c.Images("") {
		if i.Pinned {
			names = append(names, i.Name)
		}
	}
	return names
}

func mustRefresh(t *testing.T, c *Cache) {
	t.Helper()
	if err := c.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// waitComplete waits until the image at name is complete, and checks
// that nobody read it: the prefetchers fetched it for its pin.
func waitComplete(t *testing.T, c *Cache, name string) {
	t.Helper()
	img := mustLookup(t, c, name)
	waitFor(t, func() bool { return img.Info().State == StateComplete || img.Info().State == StateVerified })
	if h := img.Info().Hits; h != 0 {
		t.Errorf("%s: %d hits, want it fetched by its pin alone", name, h)
	}
}

// A pin is on the name: a new version upstream is pinned from the moment
// the catalog lists it, fetched whole without a read, and never evicted
// (it was recorded without the pin: a defect the model test found).
func TestPinOfANameFollowsNewVersions(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.Add("a.img", randomBytes(300*kib, 1), true)
	up.Add("b.img", randomBytes(100*kib, 2), true)
	c := openTest(t, dir, up)
	if err := c.Pin("a.img", true); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, c, "a.img")
	old := mustLookup(t, c, "a.img")

	v1 := randomBytes(200*kib, 3)
	up.Add("a.img", v1, true)
	mustRefresh(t, c)
	img := mustLookup(t, c, "a.img")
	if img == old {
		t.Fatal("the refresh did not make a new version of a.img")
	}
	if got := pinnedNames(c); !slices.Equal(got, []string{"a.img"}) {
		t.Fatalf("pinned after a new version of a.img: %q, want [a.img]", got)
	}
	waitComplete(t, c, "a.img")
	if _, err := c.Evict("a.img"); !errors.Is(err, ErrPinned) {
		t.Errorf("Evict of the new version: %v, want ErrPinned", err)
	}
	if got := readAll(t, c, img); !bytes.Equal(got, v1) {
		t.Error("the new version's bytes differ")
	}
	want := []PinInfo{{PinRule: PinRule{PinName, "a.img"}, Images: []string{"a.img"}}}
	checkPins(t, c, want)
	c.Close()

	c = openTest(t, dir, up)
	defer c.Close()
	checkPins(t, c, want)
	if got := pinnedNames(c); !slices.Equal(got, []string{"a.img"}) {
		t.Errorf("pinned after a restart: %q", got)
	}
}

// checkPins compares c.Pins with want, times aside (each must be set).
func checkPins(t *testing.T, c *Cache, want []PinInfo) {
	t.Helper()
	got := c.Pins()
	for i := range got {
		if got[i].Added.IsZero() {
			t.Errorf("pin %s: no time added", got[i].PinRule)
		}
		got[i].Added = time.Time{}
	}
	if !slices.EqualFunc(got, want, func(a, b PinInfo) bool {
		return a.PinRule == b.PinRule && slices.Equal(a.Images, b.Images)
	}) {
		t.Errorf("Pins() = %+v, want %+v", got, want)
	}
}

// A glob pins every image it matches, and images that match it later
// as the refresh lists them.
func TestPinByGlobTakesNewImages(t *testing.T) {
	up := newFake()
	for i, name := range []string{"dir/a", "dir/sub/b", "other/c", "dirt"} {
		up.Add(name, randomBytes(100*kib, uint64(i+1)), true)
	}
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	info, err := c.AddPin(PinRule{PinGlob, "dir/*"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dir/a", "dir/sub/b"}; !slices.Equal(info.Images, want) {
		t.Errorf("AddPin(dir/*) pins %q, want %q", info.Images, want)
	}
	up.Add("dir/new", randomBytes(150*kib, 9), true)
	mustRefresh(t, c)
	if got, want := pinnedNames(c), []string{"dir/a", "dir/new", "dir/sub/b"}; !slices.Equal(got, want) {
		t.Errorf("pinned after dir/new appeared: %q, want %q", got, want)
	}
	waitComplete(t, c, "dir/new")
	if st := mustLookup(t, c, "other/c").Info().State; st != StateAbsent {
		t.Errorf("other/c is %s, want absent (not pinned, not read)", st)
	}
	checkPins(t, c, []PinInfo{{PinRule: PinRule{PinGlob, "dir/*"}, Images: []string{"dir/a", "dir/new", "dir/sub/b"}}})

	for _, bad := range []PinRule{{PinGlob, "dir/["}, {PinGlob, ""}, {PinAlias, "debian/12"}, {"regexp", "x"}} {
		if _, err := c.AddPin(bad); !errors.Is(err, ErrBadPin) {
			t.Errorf("AddPin(%s): %v, want ErrBadPin", bad, err)
		}
	}
	if _, err := c.AddPin(PinRule{PinName, "nonesuch"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddPin of an unknown name: %v, want ErrNotFound", err)
	}
	if _, err := c.AddPin(PinRule{PinName, "dir"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddPin of a directory's name: %v, want ErrNotFound", err)
	}
	if len(c.Pins()) != 1 {
		t.Errorf("refused rules were kept: %+v", c.Pins())
	}
}

// streamItem is an item of a simplestreams product, with the attributes
// the simplestreams upstream gives it.
func streamItem(product, version, file, aliases string) upstream.Entry {
	return upstream.Entry{
		Name:    "images/" + strings.ReplaceAll(product, ":", "/") + "/" + version + "/" + file,
		Size:    100 * kib,
		ModTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		ETag:    `"` + version + `"`,
		Attrs: map[string]string{"product": product, "version": version, "ftype": file,
			"arch": "amd64", "aliases": aliases},
	}
}

const (
	debian = "debian:bookworm:amd64:default"
	ubuntu = "ubuntu:noble:amd64:default"
)

func streamItems(up interface{ AddEntry(upstream.Entry) }, product, version, aliases string) []string {
	var names []string
	for _, f := range []string{"incus.tar.xz", "rootfs.squashfs"} {
		e := streamItem(product, version, f, aliases)
		up.AddEntry(e)
		names = append(names, e.Name)
	}
	return names
}

func withProducts(cfg *Config) { cfg.Products = simplestreams.Products{} }

// A pin by alias, or by glob over a mirror of products, keeps the newest
// version of each product it names: when a new version is listed it is
// pinned and fetched, and the older one unpinned (still listed, evictable).
func TestPinByAliasKeepsTheNewestVersion(t *testing.T) {
	up := newFake()
	deb1 := streamItems(up, debian, "20240101_05:24", "debian/12,debian/bookworm")
	ubu1 := streamItems(up, ubuntu, "20240101_05:24", "ubuntu/24.04,ubuntu/noble")
	c := openTest(t, t.TempDir(), up, withProducts)
	defer c.Close()
	for _, p := range []struct {
		r    PinRule
		want []string
	}{{PinRule{PinAlias, "debian/12/amd64"}, deb1}, {PinRule{PinGlob, "images/ubuntu/*"}, ubu1}} {
		info, err := c.AddPin(p.r)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(info.Images, p.want) {
			t.Errorf("AddPin(%s) pins %q, want %q", p.r, info.Images, p.want)
		}
	}
	if got, want := pinnedNames(c), slices.Concat(deb1, ubu1); !slices.Equal(got, want) {
		t.Fatalf("pinned %q, want %q", got, want)
	}
	for _, n := range slices.Concat(deb1, ubu1) {
		waitComplete(t, c, n)
	}

	deb2 := streamItems(up, debian, "20240102_05:24", "debian/12,debian/bookworm")
	ubu2 := streamItems(up, ubuntu, "20240102_05:24", "ubuntu/24.04,ubuntu/noble")
	mustRefresh(t, c)
	if got, want := pinnedNames(c), slices.Concat(deb2, ubu2); !slices.Equal(got, want) {
		t.Fatalf("pinned after new versions %q, want %q", got, want)
	}
	for _, n := range slices.Concat(deb2, ubu2) {
		waitComplete(t, c, n)
	}
	checkPins(t, c, []PinInfo{
		{PinRule: PinRule{PinAlias, "debian/12/amd64"}, Images: deb2},
		{PinRule: PinRule{PinGlob, "images/ubuntu/*"}, Images: ubu2},
	})
	for _, n := range slices.Concat(deb1, ubu1) { // the old versions: listed, cached, evictable
		waitFor(t, func() bool { return !mustLookup(t, c, n).InUse() }) // its prefetcher let go
		if d, err := c.Evict(n); err != nil || len(d.Evicted) != 1 {
			t.Errorf("Evict(%s) of an old version: %+v, %v", n, d, err)
		}
	}
}

// Unpinning removes the rule and the pins it made, except those another
// rule makes too.
func TestUnpinRemovesTheRuleAndItsPins(t *testing.T) {
	up := newFake()
	for i, name := range []string{"dir/a", "dir/b", "c"} {
		up.Add(name, randomBytes(100*kib, uint64(i+1)), true)
	}
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	if _, err := c.AddPin(PinRule{PinGlob, "dir/*"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin("dir/a", true); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, c, "dir/b")
	if err := c.Pin("dir/b", false); !errors.Is(err, ErrPinned) || !strings.Contains(err.Error(), `glob "dir/*"`) {
		t.Errorf("unpin of dir/b, pinned by a glob: %v, want ErrPinned naming the glob", err)
	}
	if err := c.Pin("c", false); err != nil {
		t.Errorf("unpin of an image not pinned: %v", err)
	}
	if err := c.Pin("nonesuch", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("unpin of an unknown image: %v, want ErrNotFound", err)
	}
	if _, err := c.RemovePin(PinRule{PinGlob, "nonesuch/*"}); !errors.Is(err, ErrNoPin) {
		t.Errorf("RemovePin of no rule: %v, want ErrNoPin", err)
	}

	info, err := c.RemovePin(PinRule{PinGlob, "dir/*"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"dir/a", "dir/b"}; !slices.Equal(info.Images, want) {
		t.Errorf("RemovePin says it pinned %q, want %q", info.Images, want)
	}
	if got := pinnedNames(c); !slices.Equal(got, []string{"dir/a"}) { // its own pin
		t.Errorf("pinned after the glob's unpin: %q, want [dir/a]", got)
	}
	waitFor(t, func() bool { return !mustLookup(t, c, "dir/b").InUse() }) // its prefetcher let go
	if d, err := c.Evict("dir/b"); err != nil || len(d.Evicted) != 1 {
		t.Errorf("Evict(dir/b) once unpinned: %+v, %v", d, err)
	}
	if err := c.Pin("dir/a", false); err != nil {
		t.Fatal(err)
	}
	if got := pinnedNames(c); len(got) != 0 || len(c.Pins()) != 0 {
		t.Errorf("after every unpin: pinned %q, rules %+v", got, c.Pins())
	}
}

// The rules survive a restart; offline, the pins the index holds stand
// (a rule over products cannot tell the newest version without the
// listing), and the first refresh applies the rules again.
func TestPinRulesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.Add("a.img", randomBytes(100*kib, 1), true)
	deb1 := streamItems(up, debian, "20240101_05:24", "debian/12")
	c := openTest(t, dir, up, withProducts)
	for _, r := range []PinRule{{PinName, "a.img"}, {PinAlias, "debian/12"}, {PinGlob, "images/nonesuch/*"}} {
		if _, err := c.AddPin(r); err != nil {
			t.Fatal(err)
		}
	}
	mustRefresh(t, c)
	before := c.Pins()
	pinned := pinnedNames(c)
	if want := slices.Concat([]string{"a.img"}, deb1); !slices.Equal(pinned, want) {
		t.Fatalf("pinned %q, want %q", pinned, want)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	up.SetListErr(errors.New("upstream down"))
	c = openTest(t, dir, up, withProducts)
	after := c.Pins()
	if !slices.EqualFunc(before, after, func(a, b PinInfo) bool { return a.PinRule == b.PinRule && a.Added.Equal(b.Added) }) {
		t.Errorf("rules after a restart: %+v, want %+v", after, before)
	}
	if got := pinnedNames(c); !slices.Equal(got, pinned) {
		t.Errorf("pinned after an offline restart: %q, want %q", got, pinned)
	}
	up.SetListErr(nil)
	deb2 := streamItems(up, debian, "20240102_05:24", "debian/12")
	mustRefresh(t, c)
	if got, want := pinnedNames(c), slices.Concat([]string{"a.img"}, deb2); !slices.Equal(got, want) {
		t.Errorf("pinned after the first refresh: %q, want %q", got, want)
	}
	c.Close()
}

// An index written before pins were rules (no meta/pins) opens with its
// pinned images' names made pins.
func TestPinsOfAnOldIndexBecomeNamePins(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.Add("a.img", randomBytes(100*kib, 1), true)
	up.Add("b.img", randomBytes(100*kib, 2), true)
	c := openTest(t, dir, up)
	c.Close()

	// The same index as an older imgcache wrote it: a.img pinned in its
	// record, no meta/pins.
	old, err := index.Open(filepath.Join(dir, "index"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := old.Load()
	old.Close()
	if err != nil {
		t.Fatal(err)
	}
	x, err := index.Open(filepath.Join(dir, "index.old"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	b := index.Batch{Maps: l.Maps, Catalog: &l.Catalog}
	for _, r := range l.Records {
		r.Pinned = r.Name == "a.img"
		b.Records = append(b.Records, r)
	}
	if err := x.Write(&b); err != nil {
		t.Fatal(err)
	}
	x.Close()
	if err := removeAndRename(filepath.Join(dir, "index.old"), filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}

	c = openTest(t, dir, up)
	defer c.Close()
	checkPins(t, c, []PinInfo{{PinRule: PinRule{PinName, "a.img"}, Images: []string{"a.img"}}})
	up.Add("a.img", randomBytes(120*kib, 3), true)
	mustRefresh(t, c)
	if got := pinnedNames(c); !slices.Equal(got, []string{"a.img"}) {
		t.Errorf("pinned after a new version: %q", got)
	}
}

// removeAndRename replaces the directory to with from.
func removeAndRename(from, to string) error {
	if err := os.RemoveAll(to); err != nil {
		return err
	}
	return os.Rename(from, to)
}

// Pins never take the cache past its size limit: a glob that pins more
// than fits fetches what fits, the rest waits (its prefetch meets no
// room and retries later), and reads of what is not stored are served
// from the upstream, right.
func TestPinsNeverPassTheLimit(t *testing.T) {
	dir := t.TempDir()
	up, data := lifecycleFake(8, 256*kib)
	c := openTest(t, dir, up, withLifecycle(Lifecycle{MaxSize: 3*256*kib + 200*kib, HighWater: 1, LowWater: 1}))
	defer c.Close()
	info, err := c.AddPin(PinRule{PinGlob, "img*"})
	if err != nil || len(info.Images) != 8 {
		t.Fatalf("AddPin(img*): %+v, %v", info, err)
	}
	// Every pinned image is complete or waits to retry for want of room.
	waitFor(t, func() bool {
		c.life.mu.Lock()
		defer c.life.mu.Unlock()
		for _, img := range c.life.queue {
			if c.life.active[img] || c.life.notBefore[img].IsZero() {
				return false
			}
		}
		return len(c.life.queue) > 0
	})
	checkUsage(t, c, dir)
	complete := 0
	for name, want := range data {
		img := mustLookup(t, c, name)
		if st := img.Info().State; st == StateComplete || st == StateVerified {
			complete++
		}
		if got := readAll(t, c, img); !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong bytes", name)
		}
		checkUsage(t, c, dir)
	}
	if complete == 0 || complete == len(data) {
		t.Errorf("%d of %d pinned images complete, want some but not all to fit", complete, len(data))
	}
}

// A pin of a name of an image of several names (one digest) pins the
// image, under each of its names.
func TestPinOfOneNameOfAnImageOfSeveral(t *testing.T) {
	up := newFake()
	blob := randomBytes(100*kib, 21)
	for _, n := range []string{"a/disk.qcow2", "b/blobs/x"} {
		up.AddEntryData(blobEntry(n, blob, nil), blob)
	}
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	info, err := c.AddPin(PinRule{PinName, "b/blobs/x"})
	if err != nil || !slices.Equal(info.Images, []string{"b/blobs/x"}) {
		t.Fatalf("AddPin: %+v, %v", info, err)
	}
	for _, n := range []string{"a/disk.qcow2", "b/blobs/x"} {
		if !mustLookup(t, c, n).Pinned() {
			t.Errorf("%s does not show pinned", n)
		}
	}
	waitComplete(t, c, "a/disk.qcow2")
}

// At start the rules pin what they select even where the records do not
// say so (a crash after a rule was written, before the flusher wrote the
// pins it made), and the prefetchers fetch it.
func TestPinRulesAppliedAtStart(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	up.Add("dir/a", randomBytes(100*kib, 1), true)
	up.Add("b", randomBytes(100*kib, 2), true)
	c := openTest(t, dir, up, withLifecycle(Lifecycle{Prefetchers: -1}))
	if _, err := c.AddPin(PinRule{PinGlob, "dir/*"}); err != nil {
		t.Fatal(err)
	}
	c.Close()

	x, err := index.Open(filepath.Join(dir, "index"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	l, err := x.Load()
	if err != nil {
		t.Fatal(err)
	}
	var b index.Batch
	for _, r := range l.Records {
		if r.Pinned {
			r.Pinned = false
			b.Records = append(b.Records, r)
		}
	}
	if len(b.Records) != 1 || x.Write(&b) != nil {
		t.Fatalf("unpinning the records of %d images", len(b.Records))
	}
	x.Close()

	up.SetListErr(errors.New("upstream down")) // the start alone
	c = openTest(t, dir, up)
	defer c.Close()
	if got := pinnedNames(c); !slices.Equal(got, []string{"dir/a"}) {
		t.Fatalf("pinned after the start: %q, want [dir/a]", got)
	}
	up.SetListErr(nil)
	waitComplete(t, c, "dir/a")
}
