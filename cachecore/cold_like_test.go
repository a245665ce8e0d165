package cachecore

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// infos lists the catalog's images as the API does, their times without
// a monotonic clock reading (as they read back from the index).
func infos(c *Cache) []Info {
	var out []Info
	for info := range c.Images("") {
		for _, t := range []*time.Time{&info.ModTime, &info.LastAccess, &info.LastErrorAt, &info.Retired} {
			*t = t.Round(0).UTC()
		}
		out = append(out, info)
	}
	return out
}

// TestColdImageLikeAnyOther: a cold image (cold.go) is shown, found,
// opened, pinned (by name and by glob), queued, evicted, checked, changed
// and dropped by a refresh, and remounted as the Image made of it would
// be; a lookup alone leaves nothing behind (cold again after a restart);
// the catalog's invariants hold after each step (catalogFaults).
func TestColdImageLikeAnyOther(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	data := map[string][]byte{}
	names := []string{"d/a.img", "d/b.img", "d/c1.img", "d/c2.img", "d/e.img", "d/f.img", "d/g.img", "d/h.img",
		"d/i.img", "top.img"}
	for i, name := range names {
		data[name] = randomBytes(150_000+i, uint64(i))
		up.Add(name, data[name], i%2 == 0)
	}
	c := openTest(t, dir, up)
	defer func() { c.Close() }()
	if hot, cold := hotCount(c), coldCount(c); hot != 0 || cold != len(names) {
		t.Fatalf("%d hot, %d cold; want all %d cold", hot, cold, len(names))
	}

	// Shown the same cold and hot: Info, the upstream's entry (Known),
	// the inode readdir gives.
	coldInfos := infos(c)
	k := known{c}
	coldEntries := map[string]upstream.Entry{}
	for _, name := range names {
		coldEntries[name], _ = k.Entry(name)
	}
	d, _ := c.ReadDir("d")
	readdirIno := map[string]uint64{}
	for i := range d.Len() {
		name, ino, _ := d.At(i)
		readdirIno["d/"+name] = ino
	}
	for _, name := range names {
		img := mustLookup(t, c, name)
		if ino, ok := readdirIno[name]; ok && img.Ino() != ino {
			t.Errorf("%s: inode %d, readdir said %d", name, img.Ino(), ino)
		}
	}
	checkCatalog(t, c)
	if hot := hotCount(c); hot != len(names) {
		t.Fatalf("after a lookup of each: %d hot", hot)
	}
	if got := infos(c); !reflect.DeepEqual(got, coldInfos) {
		t.Fatalf("Info hot and cold differ:\nhot  %+v\ncold %+v", got, coldInfos)
	}
	for _, name := range names {
		if e, _ := k.Entry(name); !reflect.DeepEqual(e, coldEntries[name]) {
			t.Errorf("%s: Known hot %+v, cold %+v", name, e, coldEntries[name])
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up)
	if hot, cold := hotCount(c), coldCount(c); hot != 0 || cold != len(names) {
		t.Fatalf("after lookups and a restart: %d hot, %d cold; want all cold", hot, cold)
	}

	// Opened and read.
	if got := readAll(t, c, mustLookup(t, c, "d/a.img")); !slices.Equal(got, data["d/a.img"]) {
		t.Fatal("d/a.img: wrong bytes")
	}
	// Pinned by name and by glob, queued: fetched whole without a read.
	if err := c.Pin("d/b.img", true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddPin(PinRule{PinGlob, "d/c*"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Queue("d/f.img"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"d/b.img", "d/c1.img", "d/c2.img", "d/f.img"} {
		waitComplete(t, c, name)
	}
	if got := pinnedNames(c); !slices.Equal(got, []string{"d/b.img", "d/c1.img", "d/c2.img"}) {
		t.Fatalf("pinned: %q", got)
	}
	// Unpinning a name nothing pins, evicting an image with nothing
	// cached: the same cold or hot.
	mustLookup(t, c, "d/h.img")
	for _, name := range []string{"d/g.img", "d/h.img"} {
		if _, err := c.RemovePin(PinRule{PinName, name}); err != nil {
			t.Errorf("unpin %s: %v", name, err)
		}
		if d, err := c.Evict(name); err != nil || !slices.Equal(d.Evicted, []string{name}) || d.FreedBytes != 0 {
			t.Errorf("evict %s: %+v, %v", name, d, err)
		}
	}
	if d, err := c.Evict("d/a.img"); err != nil || len(d.Evicted) != 1 {
		t.Errorf("evict d/a.img: %+v, %v", d, err)
	}
	// Checked: a cold image is reported as a hot one with nothing cached.
	res, err := c.Check(context.Background(), "d")
	if err != nil {
		t.Fatal(err)
	}
	reports := map[string]ImageReport{}
	for _, r := range res.Reports {
		reports[r.Name] = r
	}
	if res.Images != len(names)-1 || len(reports) != len(names)-1 {
		t.Fatalf("check d: %d images, %d reports", res.Images, len(reports))
	}
	coldReport, hotReport := reports["d/g.img"], reports["d/h.img"]
	coldReport.Name = hotReport.Name
	if coldReport != hotReport {
		t.Errorf("check: cold %+v, hot %+v", reports["d/g.img"], hotReport)
	}
	checkCatalog(t, c)

	// A refresh: a new version of a cold image, one dropped; the others
	// stay cold.
	up.Add("d/i.img", []byte("new version"), false)
	up.Remove("top.img")
	mustRefresh(t, c)
	checkCatalog(t, c)
	if _, ok := c.Lookup("top.img"); ok {
		t.Fatal("top.img: still listed")
	}
	if got := readAll(t, c, mustLookup(t, c, "d/i.img")); string(got) != "new version" {
		t.Fatalf("d/i.img after a new version: %q", got)
	}
	if _, err := c.Evict("d/i.img"); err != nil {
		t.Fatal(err)
	}
	before := infos(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Remounted with the upstream down: what happened stays, the one only
	// looked up (d/e.img) is cold again, and every image shows as before.
	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	// Hot: read, pinned, fetched or evicted (a chunk map was written).
	hotNow := []string{"d/a.img", "d/b.img", "d/c1.img", "d/c2.img", "d/f.img", "d/i.img", "d/g.img", "d/h.img"}
	if hot, cold := hotCount(c), coldCount(c); hot != len(hotNow) || cold != len(names)-1-len(hotNow) {
		t.Fatalf("remounted: %d hot, %d cold; want %d and %d", hot, cold, len(hotNow), len(names)-1-len(hotNow))
	}
	if got := infos(c); !reflect.DeepEqual(got, before) {
		t.Fatalf("remounted: Info differs:\nnow    %+v\nbefore %+v", got, before)
	}
	if got := pinnedNames(c); !slices.Equal(got, []string{"d/b.img", "d/c1.img", "d/c2.img"}) {
		t.Fatalf("remounted: pinned %q", got)
	}
	if got := readAll(t, c, mustLookup(t, c, "d/b.img")); !slices.Equal(got, data["d/b.img"]) {
		t.Fatal("d/b.img from the cache: wrong bytes")
	}
	before = infos(c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	var inIndex []Info
	for info := range v.Images("") {
		info.Source = before[len(inIndex)].Source // the index has none
		for _, t := range []*time.Time{&info.ModTime, &info.LastAccess, &info.LastErrorAt, &info.Retired} {
			*t = t.Round(0).UTC()
		}
		inIndex = append(inIndex, info)
	}
	if !reflect.DeepEqual(inIndex, before) {
		t.Fatalf("the index says:\n%+v\nthe cache said:\n%+v", inIndex, before)
	}
}
