package cachecore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// The unit tests of the lifecycle use the fake upstream and 64 KiB chunks;
// the integration tests prove the same on a real mount.

const kib = 1 << 10

// lifecycleFake serves n images of size bytes each, named img00, img01...
func lifecycleFake(n int, size int) (*upstreamtest.Upstream, map[string][]byte) {
	up := newFake()
	data := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("img%02d", i)
		data[name] = randomBytes(size, uint64(i+1))
		up.Add(name, data[name], false)
	}
	return up, data
}

// readSettled reads an image whole and waits for its fetches to let go of
// it, so that it is in the LRU list, in order, before the next read.
func readSettled(t *testing.T, c *Cache, name string) []byte {
	t.Helper()
	img := mustLookup(t, c, name)
	b := readAll(t, c, img)
	waitFor(t, func() bool {
		img.mu.Lock()
		defer img.mu.Unlock()
		return img.users == 0
	})
	return b
}

func withLifecycle(lc Lifecycle) func(*Config) {
	return func(cfg *Config) { cfg.Lifecycle = lc }
}

// dataAllocated is what du would say of the data directory.
func dataAllocated(t *testing.T, dir string) int64 {
	t.Helper()
	return dirAllocated(filepath.Join(dir, "data"))
}

// checkUsage checks that the accounted usage is the disk's, and within
// the limit. An image written since its last user let go is booked for
// its writes' reservations, above its file: then the usage covers the
// disk, by no more than the slack of those writes.
func checkUsage(t *testing.T, c *Cache, dir string) {
	t.Helper()
	if err := c.life.space.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
	u := c.Usage()
	var slack int64
	for _, img := range c.imageList() {
		img.mu.Lock()
		if img.life.unmeasured {
			slack += int64(img.nChunks) * writeSlack
		}
		img.mu.Unlock()
	}
	if disk := dataAllocated(t, dir); disk > u.CacheBytes || u.CacheBytes > disk+slack {
		t.Fatalf("usage says %d bytes, the data directory has %d allocated (%d of writes' slack allowed)", u.CacheBytes, disk, slack)
	}
	if u.CacheBytes > u.Limit {
		t.Fatalf("usage %d over the limit %d", u.CacheBytes, u.Limit)
	}
}

// checkLimit checks that the disk is within the limit, while the pruner
// may be at work (the usage is counted down just after a file goes).
func checkLimit(t *testing.T, c *Cache, dir string) {
	t.Helper()
	if disk, limit := dataAllocated(t, dir), c.Usage().Limit; disk > limit {
		t.Fatalf("data directory has %d bytes allocated, over the limit %d", disk, limit)
	}
}

func TestLimitEvictsLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	up, data := lifecycleFake(10, 256*kib)
	// Room for three images (plus a chunk's reservation); the pruner
	// stays out of the way (high water 100%) so that eviction is all
	// synchronous and the order exact.
	c := openTest(t, dir, up, withLifecycle(Lifecycle{MaxSize: 3*256*kib + 200*kib, HighWater: 1, LowWater: 1}))
	defer c.Close()
	for i := range 10 {
		name := fmt.Sprintf("img%02d", i)
		if got := readSettled(t, c, name); !bytes.Equal(got, data[name]) {
			t.Fatalf("%s: bytes differ", name)
		}
		checkUsage(t, c, dir)
	}
	for i := range 10 {
		name := fmt.Sprintf("img%02d", i)
		st := mustLookup(t, c, name).Info().State
		if want := StateAbsent; i >= 7 {
			if st != StateComplete {
				t.Errorf("%s (one of the last three read) is %s, want complete", name, st)
			}
		} else if st != want {
			t.Errorf("%s is %s, want %s", name, st, want)
		}
	}
	if n := c.Stats().Evictions.Load(); n != 7 {
		t.Errorf("%d evictions, want 7", n)
	}
	// An evicted image faults in again.
	if got := readAll(t, c, mustLookup(t, c, "img00")); !bytes.Equal(got, data["img00"]) {
		t.Fatal("img00 read after eviction differs")
	}
	checkUsage(t, c, dir)
}

func TestOpenAndPinnedImagesSurvivePressure(t *testing.T) {
	dir := t.TempDir()
	up, data := lifecycleFake(8, 256*kib)
	c := openTest(t, dir, up, withLifecycle(Lifecycle{MaxSize: 3*256*kib + 200*kib, HighWater: 1, LowWater: 1}))
	defer c.Close()
	open := mustLookup(t, c, "img00")
	h, err := c.Open(open)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	buf := make([]byte, open.Size())
	if _, err := h.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	pinned := mustLookup(t, c, "img01")
	if err := c.Pin("img01", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return pinned.Info().State == StateComplete })
	for i := 2; i < 8; i++ {
		readSettled(t, c, fmt.Sprintf("img%02d", i))
		checkUsage(t, c, dir)
	}
	if st := open.Info().State; st != StateComplete {
		t.Errorf("open image is %s after pressure", st)
	}
	if st := pinned.Info().State; st != StateComplete {
		t.Errorf("pinned image is %s after pressure", st)
	}
	if st := mustLookup(t, c, "img07").Info().State; st != StateComplete {
		t.Errorf("last image read is %s", st)
	}
	if _, err := c.Evict("img00"); !errors.Is(err, ErrBusy) {
		t.Errorf("Evict of an open image: %v, want ErrBusy", err)
	}
	if _, err := c.Evict("img01"); !errors.Is(err, ErrPinned) {
		t.Errorf("Evict of a pinned image: %v, want ErrPinned", err)
	}
	if _, err := c.Evict("nonesuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Evict of an unknown image: %v, want ErrNotFound", err)
	}

	// Now everything cached is open or pinned but img07: fill the rest
	// with pins, and a read of another image is served without storing.
	if err := c.Pin("img07", true); err != nil {
		t.Fatal(err)
	}
	before := c.Stats().DirectReads.Load()
	if got := readAll(t, c, mustLookup(t, c, "img05")); !bytes.Equal(got, data["img05"]) {
		t.Fatal("read with no room: bytes differ")
	}
	if c.Stats().DirectReads.Load() == before {
		t.Error("read with no room did not read directly")
	}
	if info := mustLookup(t, c, "img05").Info(); info.State == StateComplete || info.LastError != "" {
		t.Errorf("image read with no room: state %s error %q, want not complete, no error", info.State, info.LastError)
	}
	checkUsage(t, c, dir)
}

func TestUsageReconciledAtStart(t *testing.T) {
	dir := t.TempDir()
	up, _ := lifecycleFake(4, 300*kib)
	c := openTest(t, dir, up)
	for i := range 3 {
		readAll(t, c, mustLookup(t, c, fmt.Sprintf("img%02d", i)))
	}
	id2 := mustLookup(t, c, "img02").id
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Behind the cache's back: an orphan file, and one image's data gone.
	orphan := filepath.Join(dir, "data", "ff", "ff"+id2[2:])
	os.MkdirAll(filepath.Dir(orphan), 0o700)
	if err := os.WriteFile(orphan, make([]byte, 100*kib), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "data", dataName(id2)))

	c = openTest(t, dir, up)
	defer c.Close()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan data file survived start-up: %v", err)
	}
	if st := mustLookup(t, c, "img02").Info().State; st != StateAbsent {
		t.Errorf("image whose file vanished is %s, want absent", st)
	}
	u := c.Usage()
	if want := 2 * 300 * kib; u.CacheBytes < int64(want) || u.CacheBytes > int64(want)+8*kib {
		t.Errorf("usage at start-up %d, want about %d", u.CacheBytes, want)
	}
	checkUsage(t, c, dir)
}

func TestPrunerKeepsWatermarks(t *testing.T) {
	dir := t.TempDir()
	up, _ := lifecycleFake(12, 160*kib)
	limit := int64(1024 * kib)
	c := openTest(t, dir, up, withLifecycle(Lifecycle{MaxSize: limit, HighWater: 0.5, LowWater: 0.25,
		PruneInterval: time.Hour})) // only kicks
	defer c.Close()
	for i := range 12 {
		readSettled(t, c, fmt.Sprintf("img%02d", i))
		checkLimit(t, c, dir)
	}
	// Writes that pass high water kick the pruner, which evicts down to
	// low water; writes after that may take usage up to high water again.
	waitFor(t, func() bool { return c.Usage().CacheBytes <= limit/2 })
	if c.Stats().Evictions.Load() == 0 {
		t.Error("the pruner evicted nothing")
	}
	if st := mustLookup(t, c, "img00").Info().State; st != StateAbsent {
		t.Errorf("least recently read image is %s after pruning", st)
	}
	if st := mustLookup(t, c, "img11").Info().State; st != StateComplete {
		t.Errorf("most recently read image is %s after pruning", st)
	}

	d, err := c.EvictAll()
	if err != nil || len(d.Evicted) == 0 || d.FreedBytes <= 0 || c.Usage().CacheBytes != 0 {
		t.Errorf("EvictAll: %+v, err %v, usage %d", d, err, c.Usage().CacheBytes)
	}
	checkUsage(t, c, dir)

	// PruneNow prunes to low water without waiting for high water.
	for i := range 2 {
		readAll(t, c, mustLookup(t, c, fmt.Sprintf("img%02d", i)))
	}
	d, err = c.PruneNow(context.Background())
	if err != nil || d.FreedBytes <= 0 || len(d.Evicted) == 0 || c.Usage().CacheBytes > limit/4 {
		t.Errorf("PruneNow: %+v (err %v), usage now %d, want <= %d", d, err, c.Usage().CacheBytes, limit/4)
	}
	checkUsage(t, c, dir)
}

// TestRetiredImageLeavesTheBooks: an image that leaves the catalog (here:
// a new version upstream) is deleted with its data, and usage follows.
func TestRetiredImageLeavesTheBooks(t *testing.T) {
	dir := t.TempDir()
	up, _ := lifecycleFake(2, 256*kib)
	c := openTest(t, dir, up)
	defer c.Close()
	readAll(t, c, mustLookup(t, c, "img00"))
	readAll(t, c, mustLookup(t, c, "img01"))
	h, err := c.Open(mustLookup(t, c, "img01")) // retired while open: deleted at close
	if err != nil {
		t.Fatal(err)
	}
	up.Add("img00", randomBytes(256*kib, 99), false)
	up.Add("img01", randomBytes(256*kib, 98), false)
	if err := c.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u := c.Usage(); u.CacheBytes < 256*kib || u.CacheBytes > 256*kib+4*writeSlack {
		t.Errorf("usage with one retired image still open: %d, want its 256 KiB (and at most its 4 chunks' slack)", u.CacheBytes)
	}
	h.Close()
	if u := c.Usage(); u.CacheBytes != 0 || u.Evictable != 0 {
		t.Errorf("usage after both old versions went: %+v, want 0", u)
	}
	checkUsage(t, c, dir)
}

// TestLRUOrderSurvivesRestart: the LRU list is rebuilt from the last
// access (or fetch) recorded in the index, oldest first.
func TestLRUOrderSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	up, _ := lifecycleFake(4, 128*kib)
	c := openTest(t, dir, up, withLifecycle(Lifecycle{Prefetchers: 1}))
	for _, name := range []string{"img02", "img00", "img03"} {
		readSettled(t, c, name)
	}
	if err := c.Queue("img01"); err != nil { // fetched, never read: as recent as its fetch
		t.Fatal(err)
	}
	waitFor(t, func() bool { return mustLookup(t, c, "img01").Complete() })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up)
	defer c.Close()
	var got []string
	for _, img := range c.life.space.Oldest() {
		got = append(got, img.Name())
	}
	if want := []string{"img02", "img00", "img03", "img01"}; !slices.Equal(got, want) {
		t.Errorf("LRU order after restart, oldest first: %v, want %v", got, want)
	}
}
