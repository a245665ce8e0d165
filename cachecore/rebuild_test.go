package cachecore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// rebuildFixture is a cache directory whose images were read (and
// verified where they have a digest), then closed; one data file then has
// a byte flipped in its second chunk.
type rebuildFixture struct {
	dir  string
	up   *upstreamtest.Upstream
	data map[string][]byte
	ids  map[string]string
}

const rebuildImageSize = 8 * 64 << 10 // eight chunks

// newRebuildFixture makes the fixture; crashed leaves the index as a
// daemon killed with -9 would (its changes in the memtable log only).
func newRebuildFixture(t *testing.T, crashed bool) *rebuildFixture {
	t.Helper()
	f := &rebuildFixture{dir: t.TempDir(), up: newFake(), data: map[string][]byte{}, ids: map[string]string{}}
	for i, name := range []string{"flipped.img", "good.img", "nodigest.img", "partial.img"} {
		f.data[name] = randomBytes(rebuildImageSize, uint64(i+1))
		f.up.Add(name, f.data[name], name != "nodigest.img")
	}
	c := openTest(t, f.dir, f.up)
	for name := range f.data {
		img := mustLookup(t, c, name)
		f.ids[name] = img.id
		if name == "partial.img" {
			h, err := c.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			h.ReadAt(make([]byte, 1000), 0)
			h.Close()
			continue
		}
		readAll(t, c, img)
		want := StateVerified
		if name == "nodigest.img" {
			want = StateComplete
		}
		waitFor(t, func() bool { return img.Info().State == want })
		waitFor(t, func() bool { // recorded after the state shows (for an image without digest)
			s, _ := c.idx.Sums(img.id)
			return s != nil
		})
	}
	if _, err := c.AddPin(PinRule{PinGlob, "good*"}); err != nil {
		t.Fatal(err)
	}
	if crashed {
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
		snap := filepath.Join(t.TempDir(), "index")
		os.Mkdir(snap, 0o700)
		if err := copyDir(filepath.Join(f.dir, "index"), snap); err != nil {
			t.Fatal(err)
		}
		c.Close()
		os.RemoveAll(filepath.Join(f.dir, "index"))
		os.Remove(filepath.Join(snap, "LOCK"))
		if err := os.Rename(snap, filepath.Join(f.dir, "index")); err != nil {
			t.Fatal(err)
		}
		if mems, _ := filepath.Glob(filepath.Join(f.dir, "index", "*.mem")); len(mems) == 0 {
			t.Fatal("no memtable log")
		}
	} else if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// A byte flipped in the second chunk of flipped.img's data file.
	p := filepath.Join(f.dir, "data", dataName(f.ids["flipped.img"]))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[64<<10+7] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *rebuildFixture) open(rebuild bool) (*Cache, error) {
	return Open(Config{Dir: f.dir, Upstream: f.up, ChunkSize: 64 << 10, RebuildIndex: rebuild})
}

// check reads every image and says the state it had before the read.
func (f *rebuildFixture) check(t *testing.T, c *Cache) map[string]State {
	t.Helper()
	states := map[string]State{}
	for name, want := range f.data {
		img := mustLookup(t, c, name)
		states[name] = img.Info().State
		if got := readAll(t, c, img); !bytes.Equal(got, want) {
			t.Fatalf("%s: wrong bytes after the rebuild", name)
		}
	}
	return states
}

func (f *rebuildFixture) asideDirs() []string {
	m, _ := filepath.Glob(filepath.Join(f.dir, "index.damaged-*"))
	return m
}

// TestRebuildIndexFromSalvagedSums: a truncated MANIFEST stops the start
// with ErrIndexDamaged and touches nothing; with RebuildIndex the index is
// rebuilt, keeping each chunk that matches the sums salvaged from the
// damaged tables (or the memtable log of a daemon killed before it made
// a table of them): the flipped chunk is fetched again, an image whose
// sums were never recorded (partial) is dropped.
func TestRebuildIndexFromSalvagedSums(t *testing.T) {
	for _, crashed := range []bool{false, true} {
		t.Run(map[bool]string{false: "tables", true: "memtable-log"}[crashed], func(t *testing.T) {
			testRebuildIndexFromSalvagedSums(t, newRebuildFixture(t, crashed))
		})
	}
}

func testRebuildIndexFromSalvagedSums(t *testing.T, f *rebuildFixture) {
	if err := os.Truncate(filepath.Join(f.dir, "index", "MANIFEST"), 5); err != nil {
		t.Fatal(err)
	}
	_, err := f.open(false)
	if !errors.Is(err, ErrIndexDamaged) || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("open of a damaged index: %v, want ErrIndexDamaged naming the manifest", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is more than one line: %q", err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "data", dataName(f.ids["good.img"]))); err != nil {
		t.Fatal("a data file went without a rebuild")
	}

	c, err := f.open(true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(f.asideDirs()) != 1 {
		t.Fatalf("damaged index moved aside to %v, want one index.damaged-*", f.asideDirs())
	}
	img := mustLookup(t, c, "flipped.img")
	if n := img.Info().CachedBytes; n != rebuildImageSize-64<<10 {
		t.Fatalf("flipped.img keeps %d bytes, want all but the flipped chunk", n)
	}
	before := f.up.Fetched()
	states := f.check(t, c)
	if n := f.up.Fetched() - before; n != 64<<10+rebuildImageSize {
		t.Fatalf("fetched %d bytes again, want the flipped chunk and partial.img (%d)", n, 64<<10+rebuildImageSize)
	}
	want := map[string]State{"flipped.img": StatePartial, "good.img": StateVerified, "nodigest.img": StateComplete, "partial.img": StateAbsent}
	for name, st := range want {
		if states[name] != st {
			t.Errorf("%s after the rebuild: %s, want %s", name, states[name], st)
		}
	}
	// The pin rules are salvaged, and pin what they select.
	if pins := c.Pins(); len(pins) != 1 || pins[0].PinRule != (PinRule{PinGlob, "good*"}) || !slices.Equal(pins[0].Images, []string{"good.img"}) {
		t.Errorf("pins after the rebuild: %+v, want the glob good* pinning good.img", pins)
	}
	if !mustLookup(t, c, "good.img").Pinned() {
		t.Error("good.img is not pinned after the rebuild")
	}
}

// TestRebuildIndexFromDigests: with every table unreadable nothing is
// salvaged; images whose data file is whole and hashes to the digest are
// kept, the rest (the flipped one, the one without digest) dropped.
func TestRebuildIndexFromDigests(t *testing.T) {
	f := newRebuildFixture(t, false)
	tables, _ := filepath.Glob(filepath.Join(f.dir, "index", "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table to damage")
	}
	for _, tb := range tables {
		if err := os.WriteFile(tb, randomBytes(4096, 9), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.open(false); !errors.Is(err, ErrIndexDamaged) {
		t.Fatalf("open of a damaged index: %v, want ErrIndexDamaged", err)
	}
	c, err := f.open(true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	states := f.check(t, c)
	want := map[string]State{"flipped.img": StateAbsent, "good.img": StateVerified, "nodigest.img": StateAbsent, "partial.img": StateAbsent}
	for name, st := range want {
		if states[name] != st {
			t.Errorf("%s after the rebuild: %s, want %s", name, states[name], st)
		}
	}
}

// TestRebuildIndexNeedsTheUpstream: a rebuild that cannot list the
// upstream changes nothing; a sound index is not rebuilt.
func TestRebuildIndexNeedsTheUpstream(t *testing.T) {
	f := newRebuildFixture(t, false)
	c, err := f.open(true) // sound: left alone
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(f.asideDirs()) != 0 {
		t.Fatal("a sound index was rebuilt")
	}

	os.Truncate(filepath.Join(f.dir, "index", "MANIFEST"), 5)
	f.up.SetListErr(errors.New("upstream down"))
	_, err = Open(Config{Dir: f.dir, Upstream: f.up, ChunkSize: 64 << 10, RebuildIndex: true, InitialListTimeout: 1})
	if !errors.Is(err, ErrIndexDamaged) || !strings.Contains(err.Error(), "upstream down") {
		t.Fatalf("rebuild without the upstream: %v, want the damage and the listing's error", err)
	}
	if len(f.asideDirs()) != 0 {
		t.Fatal("the index was moved aside though the rebuild could not be done")
	}
	if _, err := os.Stat(filepath.Join(f.dir, "data", dataName(f.ids["good.img"]))); err != nil {
		t.Fatal("a data file went though the rebuild could not be done")
	}
}
