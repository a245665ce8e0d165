package cachecore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/imgcache/imgcache/cachecore/index"
)

// hotCount and coldCount are how many images of c are hot and cold.
func hotCount(c *Cache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.images)
}

func coldCount(c *Cache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cold.cold()
}

// TestColdImages: images nothing has happened to are held cold, from a
// listing and from the index, and shown as any other: listed in order,
// found, counted, with the inode numbers they have once hot; the first
// lookup makes one hot, its data makes it stay hot across a restart, and
// a listing that drops a cold image drops its record.
func TestColdImages(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	data := map[string][]byte{}
	var names []string
	for i := range 30 {
		name := fmt.Sprintf("d%d/img%02d", i%3, i)
		data[name] = randomBytes(1000+i, uint64(i))
		up.Add(name, data[name], i%2 == 0)
		names = append(names, name)
	}
	slices.Sort(names)
	c := openTest(t, dir, up)
	if hot, cold := hotCount(c), coldCount(c); hot != 0 || cold != len(names) {
		t.Fatalf("after the first listing: %d hot, %d cold; want all %d cold", hot, cold, len(names))
	}
	// What the tree says of a cold image is what its Image says.
	dirIno := map[string]uint64{}
	for _, dir := range []string{"d0", "d1", "d2"} {
		d, _ := c.ReadDir(dir)
		for i := range d.Len() {
			name, ino, isDir := d.At(i)
			if isDir {
				t.Fatalf("%s/%s is a directory", dir, name)
			}
			dirIno[dir+"/"+name] = ino
		}
	}
	var listed []string
	for info := range c.Images("") {
		if info.State != StateAbsent || info.Size != int64(len(data[info.Name])) || info.Source != "fake://up/"+info.Name {
			t.Errorf("Images: %+v", info)
		}
		listed = append(listed, info.Name)
	}
	if !slices.Equal(listed, names) {
		t.Fatalf("Images: %q, want %q", listed, names)
	}
	if s := c.Snapshot(); s.Images != len(names) || s.ByState[StateAbsent] != len(names) {
		t.Fatalf("Snapshot: %d images, %d absent", s.Images, s.ByState[StateAbsent])
	}
	img := mustLookup(t, c, "d1/img04")
	if img.Ino() != dirIno["d1/img04"] || hotCount(c) != 1 || coldCount(c) != len(names)-1 {
		t.Fatalf("the image looked up: inode %d (readdir: %d); %d hot, %d cold", img.Ino(), dirIno["d1/img04"],
			hotCount(c), coldCount(c))
	}
	if mustLookup(t, c, "d1/img04") != img {
		t.Fatal("a second lookup made another Image")
	}
	if got := readAll(t, c, img); string(got) != string(data["d1/img04"]) {
		t.Fatal("d1/img04: wrong bytes")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// From the index, with the upstream down: the one read is hot (it has
	// data), the others cold, and they read as before.
	up.SetDown(errors.New("down"))
	c = openTest(t, dir, up)
	if hot, cold := hotCount(c), coldCount(c); hot != 1 || cold != len(names)-1 {
		t.Fatalf("from the index: %d hot, %d cold; want 1 and %d", hot, cold, len(names)-1)
	}
	for _, name := range []string{"d1/img04", "d2/img05"} {
		if img := mustLookup(t, c, name); img.Ino() != dirIno[name] || img.Size() != int64(len(data[name])) {
			t.Fatalf("%s from the index: inode %d (was %d), size %d", name, img.Ino(), dirIno[name], img.Size())
		}
	}
	if info := mustLookup(t, c, "d1/img04").Info(); info.CachedBytes != int64(len(data["d1/img04"])) || info.Hits != 1 {
		t.Fatalf("d1/img04 after a restart: %+v", info)
	}
	if got := readAll(t, c, mustLookup(t, c, "d1/img04")); string(got) != string(data["d1/img04"]) {
		t.Fatal("d1/img04 from the index: wrong bytes")
	}

	// A listing: one cold image gone, one new; the others stay cold and
	// nothing is written of them.
	up.SetDown(nil)
	up.Remove("d0/img00")
	up.Add("d0/new", randomBytes(77, 99), false)
	if err := c.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Lookup("d0/img00"); ok {
		t.Fatal("a cold image gone upstream is still listed")
	}
	if hot, cold := hotCount(c), coldCount(c); hot != 2 || cold != len(names)-2 { // d2/img05 was looked up
		t.Fatalf("after a listing: %d hot, %d cold; want 2 and %d", hot, cold, len(names)-2)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	var inIndex []string
	for info := range l.Images("") {
		inIndex = append(inIndex, info.Name)
	}
	want := append(slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == "d0/img00" }), "d0/new")
	slices.Sort(want)
	if !slices.Equal(inIndex, want) {
		t.Fatalf("the index holds %q, want %q", inIndex, want)
	}
}

// TestColdRecordsAsWritten: a record as a listing makes it, written to
// the index and read back, is cold, and its cold form gives the record
// back field for field; a record of an image anything has happened to is
// not.
func TestColdRecordsAsWritten(t *testing.T) {
	dir := t.TempDir()
	x, err := index.Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	fresh := index.Record{ID: fmt.Sprintf("%064x", 1), Name: "a/b.img", Size: 1 << 30,
		ModTime: time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC), ETag: `"abc"`, ChunkSize: 1 << 20,
		Listed: true, Added: time.Now()}
	others := map[string]func(r *index.Record){
		"hits":     func(r *index.Record) { r.Hits = 1 },
		"pinned":   func(r *index.Record) { r.Pinned = true },
		"error":    func(r *index.Record) { r.LastError = "x" },
		"verdict":  func(r *index.Record) { r.Verdict = index.Verified },
		"attrs":    func(r *index.Record) { r.SetExtras(index.Extra{Attrs: index.AttrsOf(map[string]string{"os": "x"})}) },
		"links":    func(r *index.Record) { r.SetExtras(index.Extra{Links: []string{"c"}}) },
		"content":  func(r *index.Record) { r.Content = true },
		"queued":   func(r *index.Record) { r.QueuedAt = time.Now() },
		"empty":    func(r *index.Record) { r.Size = 0 },
		"unlisted": func(r *index.Record) { r.Listed = false },
		"no mtime": nil,
		"digest":   func(r *index.Record) { r.Digest = "sha256:" + fmt.Sprintf("%064x", 9) },
		"no etag":  func(r *index.Record) { r.ETag, r.Digest = "", "sha256:"+fmt.Sprintf("%064x", 9) },
		"no tags":  func(r *index.Record) { r.ETag = "" },
		"chunks":   func(r *index.Record) { r.ChunkSize = 1 << 32 }, // more than a coldImage holds
	}
	stillCold := map[string]bool{"no mtime": true, "digest": true, "no etag": true, "no tags": true}
	b := index.Batch{Records: []index.Record{fresh}}
	i := 2
	want := map[string]bool{fresh.ID: true}
	for what, change := range others {
		r := fresh
		r.ID, r.Name = fmt.Sprintf("%064x", i), what
		i++
		if change == nil {
			r.ModTime = time.Time{}
		} else {
			change(&r)
		}
		want[r.ID] = stillCold[what]
		b.Records = append(b.Records, r)
	}
	if err := x.Write(&b); err != nil {
		t.Fatal(err)
	}
	l, err := x.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range l.Records {
		ci, cold := coldOf(&r)
		if cold != want[r.ID] {
			t.Errorf("%s: cold %v, want %v", r.Name, cold, want[r.ID])
		}
		if cold && ci.record() != r {
			t.Errorf("%s: cold form gives %+v, want %+v", r.Name, ci.record(), r)
		}
	}
}

// TestSortCold: sortCold puts images in catalog order, names with long
// common prefixes, directories named like files and multi-byte names
// among them.
func TestColdImageSize(t *testing.T) {
	if n := unsafe.Sizeof(coldImage{}); n > 96 {
		t.Errorf("a coldImage is %d bytes, want at most 96: a million of them are held", n)
	}
}

func TestSortCold(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	parts := []string{"a", "a-b", "a.b", "b", "ü", "ubuntu-22.04-server-cloudimg-amd64", "x/y", ""}
	var imgs []coldImage
	for i := range 5000 {
		name := parts[r.IntN(len(parts)-1)]
		for range r.IntN(3) {
			name += "/" + parts[r.IntN(len(parts)-1)]
		}
		name += fmt.Sprintf("%s%d", parts[r.IntN(len(parts))], r.IntN(50))
		imgs = append(imgs, coldImage{name: name})
		imgs[i].id[0], imgs[i].id[1] = byte(i), byte(i>>8)
	}
	was := slices.Clone(imgs)
	want := slices.Clone(imgs)
	slices.SortStableFunc(want, byCatalogOrder)
	from := sortCold(imgs)
	for i := range imgs {
		if imgs[i].name != want[i].name {
			t.Fatalf("image %d: %q, want %q", i, imgs[i].name, want[i].name)
		}
		if imgs[i] != was[from[i]] {
			t.Fatalf("image %d: was at %d, which held %q", i, from[i], was[from[i]].name)
		}
	}
}

// TestColdSetIDOrder: the ID order of a cold set is the same whether it
// comes from the sort's permutation (images read in ID order) or a sort
// of its own, and find finds every image.
func TestColdSetIDOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var imgs []coldImage
	for i := range 3000 {
		ci := coldImage{name: fmt.Sprintf("d%d/x%d", r.IntN(7), r.IntN(100000))}
		for j := range ci.id {
			ci.id[j] = byte(r.IntN(256))
		}
		if i%10 == 0 {
			ci.id[0], ci.id[1] = 7, 7 // the first 8 bytes of some IDs alike
			ci.id[2], ci.id[3], ci.id[4], ci.id[5], ci.id[6], ci.id[7] = 0, 0, 0, 0, 0, 0
		}
		imgs = append(imgs, ci)
	}
	slices.SortFunc(imgs, func(a, b coldImage) int { return bytes.Compare(a.id[:], b.id[:]) })
	fromRead := newColdSet(slices.Clone(imgs), true)
	sorted := newColdSet(slices.Clone(imgs), false)
	if !slices.Equal(fromRead.byID, sorted.byID) {
		t.Fatal("the ID order from the permutation differs from a sort's")
	}
	for j, k := range sorted.byID {
		if j > 0 && bytes.Compare(sorted.imgs[sorted.byID[j-1]].id[:], sorted.imgs[k].id[:]) >= 0 {
			t.Fatalf("byID out of order at %d", j)
		}
	}
	for _, ci := range imgs {
		if i, ok := sorted.find(ci.id); !ok || sorted.imgs[i].id != ci.id {
			t.Fatalf("find %x: %d %v", ci.id[:4], i, ok)
		}
	}
}

// TestColdRooms: start-up gathers the same cold images, in ID order,
// whether each part's fit the room made for them, outgrew it, or the
// rooms held far more than there were.
func TestColdRooms(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	for i := range 300 {
		up.Add(fmt.Sprintf("d%d/img%03d", i%4, i), randomBytes(100+i, uint64(i)), false)
	}
	c := openTest(t, dir, up)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	defer func(was func(int) int) { coldRoom = was }(coldRoom)
	var want []coldImage
	for _, room := range []func(int) int{
		coldRoom,                                // this many
		func(int) int { return 3 },              // too few: blocks
		func(est int) int { return 1000 + est }, // far too many: copied
		func(int) int { return 40 },             // about as many: some outgrow theirs
	} {
		coldRoom = room
		c := openTest(t, dir, up)
		c.mu.Lock() // the catalog loop's first refresh publishes a new set
		got := slices.Clone(c.cold.imgs)
		for _, ci := range got {
			if i, ok := c.cold.find(ci.id); !ok || c.cold.imgs[i].name != ci.name {
				t.Errorf("%s not found by its ID", ci.name)
			}
		}
		c.mu.Unlock()
		if want == nil {
			want = got
		}
		if len(got) != 300 || !slices.Equal(got, want) {
			t.Errorf("%d cold images; want the 300 of the first start, in the same order", len(got))
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
