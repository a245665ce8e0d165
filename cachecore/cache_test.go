package cachecore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

func TestReadMatchesUpstreamAndSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	data := randomBytes(1<<20+12345, 1) // not a multiple of the chunk size
	up.Add("os/jammy.img", data, true)
	up.Add("empty.img", nil, false)

	c := openTest(t, dir, up)
	img := mustLookup(t, c, "os/jammy.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("bytes differ from upstream")
	}
	if got := up.Fetched(); got != int64(len(data)) {
		t.Fatalf("fetched %d bytes for a %d-byte image", got, len(data))
	}
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if info := img.Info(); info.Hits != 2 || info.CachedBytes != int64(len(data)) {
		t.Fatalf("info after two reads: %+v", info)
	}
	if e := mustLookup(t, c, "empty.img"); e.Info().State != StateComplete {
		t.Fatalf("empty image state %s", e.Info().State)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The upstream is gone: the catalog and the bytes come from the cache.
	up.SetListErr(errors.New("upstream down"))
	up.SetFetchErr(func(string, int64, int64) error { return errors.New("upstream down") })
	before := up.Fetched()
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "os/jammy.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("bytes differ after restart")
	}
	if up.Fetched() != before {
		t.Fatal("restart fetched bytes that were cached")
	}
	if info := img.Info(); info.Hits != 3 || info.State != StateVerified {
		t.Fatalf("after restart: %+v", info)
	}
}

func TestConcurrentReadersFetchEachChunkOnce(t *testing.T) {
	up := newFake()
	data := randomBytes(3<<20, 2)
	up.Add("big.img", data, false)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "big.img")

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := c.Open(img)
			if err != nil {
				t.Error(err)
				return
			}
			defer h.Close()
			// Each reader walks the image from a different place.
			b := make([]byte, 48<<10)
			for k := range len(data) / len(b) {
				off := int64((k+i*7)%(len(data)/len(b))) * int64(len(b))
				if _, err := h.ReadAt(b, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(b, data[off:off+int64(len(b))]) {
					t.Errorf("reader %d: wrong bytes at %d", i, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := up.Fetched(); got != int64(len(data)) {
		t.Fatalf("upstream served %d bytes for a %d-byte image read by 8 readers", got, len(data))
	}
}

func TestPartialReadFetchesLittle(t *testing.T) {
	up := newFake()
	data := randomBytes(16<<20, 3)
	up.Add("big.img", data, false)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	defer h.Close()
	b := make([]byte, 100<<10)
	off := int64(8<<20 + 1000)
	if _, err := h.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, data[off:off+int64(len(b))]) {
		t.Fatal("wrong bytes")
	}
	// 100 KiB across two 64 KiB chunks at most... plus the chunk it starts in.
	if got := up.Fetched(); got > 3*(64<<10) {
		t.Fatalf("fetched %d bytes for a 100 KiB read", got)
	}
	if info := img.Info(); info.State != StatePartial || info.CachedBytes != up.Fetched() {
		t.Fatalf("info: %+v", info)
	}
}

func TestSequentialReadReadsAhead(t *testing.T) {
	up := newFake()
	data := randomBytes(32<<20, 4)
	up.Add("big.img", data, false)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "big.img")
	h, _ := c.Open(img)
	defer h.Close()
	b := make([]byte, 256<<10)
	read := int64(readAheadStart + 1<<20)
	for off := int64(0); off < read; off += int64(len(b)) {
		if _, err := h.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	// Read-ahead goes on in the background; it must go past what was read.
	waitFor(t, func() bool { return img.CachedBytes() > read })
}

func TestFailedFetchIsRecordedAndRetried(t *testing.T) {
	up := newFake()
	data := randomBytes(256<<10, 5)
	up.Add("x.img", data, false)
	up.SetFetchErr(func(string, int64, int64) error { return errors.New("GET fake://up/x.img: 500 Internal Server Error") })
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	_, err := h.ReadAt(make([]byte, 4096), 0)
	if err == nil || !strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Fatalf("read error = %v", err)
	}
	if info := img.Info(); !strings.Contains(info.LastError, "500") || info.LastErrorAt.IsZero() {
		t.Fatalf("error not recorded: %+v", info)
	}
	up.SetFetchErr(nil)
	h, _ = c.Open(img) // the first handle repeats its failure for a while (FailHold)
	defer h.Close()
	b := make([]byte, len(data))
	if _, err := h.ReadAt(b, 0); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("retry: err=%v equal=%v", err, bytes.Equal(b, data))
	}
	if info := img.Info(); info.LastError != "" || info.State != StateComplete {
		t.Fatalf("after a complete read: %+v", info)
	}
}

func TestInterruptedReaderLeavesFetchToOthers(t *testing.T) {
	up := newFake()
	data := randomBytes(64<<10, 6)
	up.Add("x.img", data, false)
	gate := make(chan struct{})
	up.SetGate(gate)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h1, _ := c.Open(img)
	defer h1.Close()
	h2, _ := c.Open(img)
	defer h2.Close()

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { _, err := h1.Read(ctx, 0, 4096); errc <- err }()
	waitFor(t, func() bool { return up.Requests() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted read: %v", err)
	}
	go func() { _, err := h2.Read(context.Background(), 0, 4096); errc <- err }()
	gate <- struct{}{}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if up.Requests() != 1 {
		t.Fatalf("%d requests; the interrupted reader's fetch should have served the other", up.Requests())
	}
}

func TestDigestMismatchInvalidates(t *testing.T) {
	up := newFake()
	data := randomBytes(200<<10, 7)
	up.Add("x.img", data, true)
	up.SetDigest("x.img", upstreamtest.Digest([]byte("something else")))
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateInvalid })
	info := img.Info()
	if info.CachedBytes != 0 || !strings.Contains(info.LastError, upstreamtest.Digest([]byte("something else"))) || !strings.Contains(info.LastError, upstreamtest.Digest(data)) {
		t.Fatalf("invalid image: %+v", info)
	}
	// The next open fetches it again.
	before := up.Fetched()
	readAll(t, c, img)
	if up.Fetched() != before+int64(len(data)) {
		t.Fatal("invalid image was not fetched again")
	}
}

// A read that found its chunk present just before a failed verification
// dropped the image reads the data file after it: while the image is open
// the bytes stay (the fetched ones, which a lazy reader may see), never a
// hole of zeros. The last close leaves the file to the cleaner.
func TestInvalidOpenImageKeepsItsBytes(t *testing.T) {
	up := newFake()
	data := randomBytes(3*testChunk, 11)
	up.Add("x.img", data, true)
	up.SetDigest("x.img", upstreamtest.Digest([]byte("something else")))
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	c.verifying <- struct{}{} // hold the verdict back
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b := make([]byte, len(data))
	if _, err := h.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	sp, err := h.Read(context.Background(), testChunk, 100) // present: no fetch
	if err != nil || sp.File == nil || sp.Len != 100 {
		t.Fatalf("read of a present chunk: %+v %v", sp, err)
	}
	<-c.verifying
	waitFor(t, func() bool { return img.Info().State == StateInvalid })
	got := make([]byte, sp.Len)
	if _, err := sp.File.ReadAt(got, sp.Off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[testChunk:testChunk+100]) {
		t.Fatal("a span taken before the verdict reads other bytes than were fetched (a hole?)")
	}
	if info := img.Info(); info.CachedBytes != 0 {
		t.Fatalf("dropped image still counts %d cached bytes", info.CachedBytes)
	}
}

func TestCatalogRefresh(t *testing.T) {
	up := newFake()
	up.Add("a.img", randomBytes(1000, 8), false)
	up.Add("dir/b.img", randomBytes(1000, 9), false)
	var mu sync.Mutex
	var changes []Change
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.Notifier = changeNotifier(func(ch []Change) { mu.Lock(); changes = append(changes, ch...); mu.Unlock() })
	})
	defer c.Close()
	root, _ := c.ReadDir("")
	if n0, _, d0 := root.At(0); root.Len() != 2 || n0 != "a.img" || d0 {
		t.Fatalf("root: %d entries, the first %q", root.Len(), n0)
	}
	if n1, _, d1 := root.At(1); n1 != "dir" || !d1 {
		t.Fatalf("root: the second entry %q, a directory: %v", n1, d1)
	}
	oldIno := mustLookup(t, c, "a.img").Ino()
	up.Add("a.img", randomBytes(1001, 10), false) // a new version
	up.Remove("dir/b.img")
	up.Add("c.img", nil, false)
	if err := c.refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if mustLookup(t, c, "a.img").Ino() == oldIno {
		t.Fatal("a changed image kept its inode")
	}
	if _, ok := c.Lookup("dir/b.img"); ok {
		t.Fatal("removed image still listed")
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[Change]bool{{"", "a.img"}: true, {"", "c.img"}: true, {"", "dir"}: true, {"dir", "b.img"}: true}
	for _, ch := range changes {
		delete(want, ch)
	}
	if len(want) != 0 {
		t.Fatalf("changes %v missed %v", changes, want)
	}
}

func TestSecondOpenOfDirectoryFails(t *testing.T) {
	dir := t.TempDir()
	c := openTest(t, dir, newFake())
	defer c.Close()
	_, err := Open(Config{Dir: dir, Upstream: newFake()})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCloseDuringFetchRecordsNoError(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(64<<10, 11), false)
	gate := make(chan struct{})
	up.SetGate(gate)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	errc := make(chan error)
	go func() { _, err := h.Read(context.Background(), 0, 10); errc <- err }()
	waitFor(t, func() bool { return up.Requests() == 1 })
	h.Close()
	go c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) && !errors.Is(err, context.Canceled) {
		t.Fatalf("read during close: %v", err)
	}
	waitFor(t, func() bool { return c.ctx.Err() != nil })
	time.Sleep(100 * time.Millisecond)
	c2 := openTestEventually(t, dir, up)
	defer c2.Close()
	if info := mustLookup(t, c2, "x.img").Info(); info.LastError != "" {
		t.Fatalf("shutdown recorded an error: %q", info.LastError)
	}
}

// openTestEventually opens once the previous cache has released the
// directory.
func openTestEventually(t *testing.T, dir string, up *upstreamtest.Upstream) *Cache {
	t.Helper()
	var c *Cache
	waitFor(t, func() bool {
		var err error
		c, err = Open(Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10})
		return err == nil
	})
	return c
}

// changeNotifier is a Notifier that hears only catalog changes.
type changeNotifier func([]Change)

func (f changeNotifier) CatalogChanged(ch []Change)      { f(ch) }
func (changeNotifier) PagesDropped(*Image, int64, int64) {}
func (changeNotifier) CachedChanged([]string)            {}
func (changeNotifier) Settled(*Image, []string)          {}
