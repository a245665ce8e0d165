package integration

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// allocated sums the allocated bytes (st_blocks*512, as du counts them) of
// the files under dir, counting only what was on disk at one instant: the
// end of the walk. A walk stats one file after another, and under load it
// can stall for hundreds of milliseconds between two of them; a file
// counted early and evicted before the walk ends leaves room that a file
// counted later has grown into, so a plain sum counts the same space
// twice. (It did: two samples of the random-read test summed 16,887,808
// and 17,907,712 bytes over walks of 576 and 302 ms, each counting a
// 3 MiB file deleted before its walk ended; on disk at the end of those
// walks: 13,709,312 and 14,725,120.) So every file is stated again once
// the walk is done, and counted only if it is still the same file (inode
// and birth time: ext4 reuses inode numbers), with the smaller of its two
// measures. The data files only grow while they exist, so each file held
// at least that much at the end of the walk, and what the walk missed
// (a file created during it) makes the figure low, never high.
func allocated(dir string) int64 {
	type seen struct {
		path  string
		id    fileID
		bytes int64
	}
	var files []seen
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if id, n, ok := statFile(p); ok {
				files = append(files, seen{p, id, n})
			}
		}
		return nil
	})
	var n int64
	for _, f := range files {
		if id, now, ok := statFile(f.path); ok && id == f.id {
			n += min(f.bytes, now)
		}
	}
	return n
}

// fileID tells a file from another that took its name and inode number.
type fileID struct {
	ino   uint64
	btime unix.StatxTimestamp
}

// statFile returns a file's identity and allocated bytes.
func statFile(path string) (fileID, int64, bool) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW,
		unix.STATX_INO|unix.STATX_BLOCKS|unix.STATX_BTIME, &st); err != nil {
		return fileID{}, 0, false
	}
	return fileID{ino: st.Ino, btime: st.Btime}, int64(st.Blocks) * 512, true
}

// sampler measures a cache directory every 100 ms until stopped and keeps
// the peaks: of the data files (what --max-size bounds) and of the whole
// directory (data and index).
type sampler struct {
	stop                chan struct{}
	done                chan struct{}
	mu                  sync.Mutex
	peakData, peakTotal int64
	samples             int
}

func sample(cacheDir string) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			data, total := allocated(filepath.Join(cacheDir, "data")), allocated(cacheDir)
			s.mu.Lock()
			s.peakData, s.peakTotal = max(s.peakData, data), max(s.peakTotal, total)
			s.samples++
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) finish() (peakData, peakTotal int64, samples int) {
	close(s.stop)
	<-s.done
	return s.peakData, s.peakTotal, s.samples
}

// TestSizeLimitHoldsUnderRandomReads reads random ranges of a working set
// three times --max-size, each read by a dd of its own, while the cache
// directory is measured every 100 ms: the data never takes more than the
// limit, and every read gives the upstream's bytes.
func TestSizeLimitHoldsUnderRandomReads(t *testing.T) {
	need(t, "dd", "getfattr")
	const limit = 16 << 20
	root := t.TempDir()
	sizes := map[string]int64{}
	for i := range 16 {
		sizes[fmt.Sprintf("set/img%02d.raw", i)] = 3<<20 + int64(i)*4096 // 48 MiB and a bit
	}
	imgs := makeImages(t, root, sizes)
	up := startNginx(t, root, false)
	m := startMount(t, up.url, "", "--max-size", "16M")

	s := sample(m.cacheDir)
	r := rand.New(rand.NewPCG(3, 4))
	names := make([]string, 0, len(imgs))
	for name := range imgs {
		names = append(names, name)
	}
	const reads = 160
	var wg sync.WaitGroup
	errs := make(chan error, reads)
	sem := make(chan struct{}, 4) // four readers at a time
	for i := range reads {
		name := names[r.IntN(len(names))]
		blocks := imgs[name].size / 65536
		skip := r.Int64N(blocks - 8)
		count := 1 + r.Int64N(8)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := runErr("dd", "if="+m.path(name), "bs=64K", "skip="+strconv.FormatInt(skip, 10),
				"count="+strconv.FormatInt(count, 10), "status=none")
			if err != nil {
				errs <- fmt.Errorf("read %d of %s: %v: %s", i, name, err, out)
				return
			}
			want, err := os.ReadFile(filepath.Join(root, name))
			if err != nil {
				errs <- err
				return
			}
			want = want[skip*65536 : (skip+count)*65536]
			if !bytes.Equal([]byte(out), want) {
				errs <- fmt.Errorf("read %d of %s at block %d: bytes differ from the upstream's", i, name, skip)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peakData, peakTotal, samples := s.finish()
	t.Logf("%d reads over %d MiB with --max-size 16M: peak of the data files %d bytes (%.1f%% of the limit), "+
		"of the whole cache directory %d bytes (index included), %d samples",
		reads, 48, peakData, 100*float64(peakData)/limit, peakTotal, samples)
	if peakData > limit {
		t.Errorf("the data files took %d bytes at their peak, over the limit of %d", peakData, limit)
	}
	// The working set did not fit: some image read earlier was evicted.
	absent := 0
	fetched := int64(0)
	for _, n := range up.bytesServed(t) {
		fetched += n
	}
	for _, name := range names {
		if xattrs(t, m.path(name))["state"] == "absent" {
			absent++
		}
	}
	if fetched <= limit || absent == 0 {
		t.Errorf("upstream sent %d bytes and %d images are absent: the workload did not press on the limit", fetched, absent)
	}
	m.unmount(t)
}

// TestLRUOrderAndWhatSurvivesPressure reads ten 4 MiB images A..J in
// order with room for three: the last three stay, the rest are absent (du
// 0, and they read right again). Then, under the same pressure, an open
// image and a pinned one survive; the pinned one became complete without
// being read.
func TestLRUOrderAndWhatSurvivesPressure(t *testing.T) {
	need(t, "cat", "getfattr", "setfattr", "du", "perl")
	root := t.TempDir()
	sizes := map[string]int64{}
	letters := "ABCDEFGHIJ"
	for _, l := range letters {
		sizes[string(l)+".img"] = 4 << 20
	}
	imgs := makeImages(t, root, sizes)
	up := startNginx(t, root, false)
	// 17 MiB with the default watermarks (90%, 80%): three images and the
	// index (its measured size counts against the limit, and varies by a
	// MiB or so) stay under the low watermark, four pass the high one, so
	// each read of a fourth image evicts exactly the least recently used.
	const limit = 17 << 20
	m := startMount(t, up.url, "", "--max-size", "17M")
	state := func(l byte) string { return xattrs(t, m.path(string(l)+".img"))["state"] }

	for i := range letters {
		run(t, "cat", m.path(letters[i:i+1]+".img"))
	}
	waitUntil(t, "pruning to settle", func() bool { return state('G') == "absent" })
	for i := range letters {
		want := "absent"
		if i >= 7 {
			want = "complete"
		}
		if got := state(letters[i]); got != want {
			t.Errorf("%c after reading A..J: %s, want %s", letters[i], got, want)
		}
	}
	if du := duBytes(t, m.path("A.img")); du != 0 {
		t.Errorf("du of evicted A.img = %d, want 0", du)
	}
	if got := sha256sum(t, m.path("B.img")); got != imgs["B.img"].sha256 {
		t.Errorf("B.img read after its eviction: sha256 %s, want %s", got, imgs["B.img"].sha256)
	}

	// Pressure again, with C held open and D pinned.
	h := holdOpen(t, m.path("C.img"))
	if got := h.read(t, 0, 4<<20); got != "ok "+imgs["C.img"].sha256 {
		t.Fatalf("reading C.img through the held descriptor: %s", got)
	}
	hits := xattrs(t, m.path("D.img"))["hits"]
	run(t, "setfattr", "-n", "user.imgcache.pin", "-v", "1", m.path("D.img"))
	waitUntil(t, "pinned D.img complete", func() bool { return state('D') == "complete" })
	x := xattrs(t, m.path("D.img"))
	if x["pinned"] != "1" || x["hits"] != hits {
		t.Errorf("pinned D.img: pinned=%s hits=%s, want 1 and %s (complete without being read)", x["pinned"], x["hits"], hits)
	}
	for _, l := range "EFGHIJ" {
		run(t, "cat", m.path(string(l)+".img"))
	}
	for _, l := range "CDJ" {
		if got := state(byte(l)); got != "complete" {
			t.Errorf("%c.img after pressure: %s, want complete (C open, D pinned, J read last)", l, got)
		}
	}
	for _, l := range "EFGH" {
		if got := state(byte(l)); got != "absent" {
			t.Errorf("%c.img after pressure: %s, want absent", l, got)
		}
	}
	if got := h.read(t, 1<<20, 1<<20); got != "ok "+sumOf(mustRead(t, filepath.Join(root, "C.img"))[1<<20:2<<20]) {
		t.Errorf("held C.img reads %s after pressure", got)
	}
	if peak := allocated(filepath.Join(m.cacheDir, "data")); peak > limit {
		t.Errorf("data files take %d bytes, over the limit", peak)
	}
	h.in.Close()
	h.cmd.Wait()
	m.unmount(t)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLifecycleSurvivesRestart: pins, the prefetch queue, hits and last
// access outlive the daemon; the next daemon fetches the pinned and queued
// images without anyone reading them.
func TestLifecycleSurvivesRestart(t *testing.T) {
	need(t, "cat", "getfattr", "setfattr")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"pinned.img": 3 << 20, "queued.img": 5 << 20, "read.img": 1 << 20})
	up := startOrigin(t, root)
	cacheDir := t.TempDir()

	// First daemon: prefetching off, so the pin and the queue wait.
	m := startMount(t, up.url, cacheDir, "--prefetchers", "0")
	run(t, "setfattr", "-n", "user.imgcache.pin", "-v", "1", m.path("pinned.img"))
	run(t, "setfattr", "-n", "user.imgcache.prefetch", "-v", "1", m.path("queued.img"))
	for range 3 {
		run(t, "cat", m.path("read.img"))
	}
	before := xattrs(t, m.path("read.img"))
	p, q := xattrs(t, m.path("pinned.img")), xattrs(t, m.path("queued.img"))
	if p["pinned"] != "1" || p["state"] != "absent" || q["queued"] != "1" || q["state"] != "absent" {
		t.Fatalf("before restart: pinned.img %v, queued.img %v", p, q)
	}
	if before["hits"] != "3" || before["last_access"] == "" {
		t.Fatalf("read.img before restart: hits %q last_access %q", before["hits"], before["last_access"])
	}
	m.unmount(t)

	// Second daemon, prefetching on: nothing is asked of it.
	m = startMount(t, up.url, cacheDir)
	after := xattrs(t, m.path("read.img"))
	if after["hits"] != before["hits"] || after["last_access"] != before["last_access"] {
		t.Errorf("read.img after restart: hits %s last_access %s, want %s and %s",
			after["hits"], after["last_access"], before["hits"], before["last_access"])
	}
	if x := xattrs(t, m.path("pinned.img")); x["pinned"] != "1" {
		t.Errorf("pinned.img lost its pin in the restart: %v", x)
	}
	done := func(name string) bool {
		s := xattrs(t, m.path(name))["state"]
		return s == "complete" || s == "verified"
	}
	waitUntil(t, "pinned.img and queued.img fetched by the new daemon", func() bool {
		return done("pinned.img") && done("queued.img")
	})
	for _, name := range []string{"pinned.img", "queued.img"} {
		x := xattrs(t, m.path(name))
		if x["hits"] != "0" {
			t.Errorf("%s was opened (hits %s): it should have been fetched without reads", name, x["hits"])
		}
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Errorf("%s prefetched: sha256 %s, want %s", name, got, imgs[name].sha256)
		}
	}
	waitUntil(t, "queued.img to leave the queue", func() bool { return xattrs(t, m.path("queued.img"))["queued"] == "0" })
	m.unmount(t)

	// Third daemon: the pin is still there, the queue is empty.
	m = startMount(t, up.url, cacheDir, "--prefetchers", "0")
	if x := xattrs(t, m.path("pinned.img")); x["pinned"] != "1" || (x["state"] != "complete" && x["state"] != "verified") {
		t.Errorf("pinned.img after a second restart: %v", x)
	}
	if x := xattrs(t, m.path("queued.img")); x["queued"] != "0" {
		t.Errorf("queued.img still queued after it was fetched: %v", x)
	}
	m.unmount(t)
}

// TestImageLargerThanTheLimitReadsRight: an image twice --max-size is read
// whole while open, so nothing can be evicted for its second half: that
// half is served straight from the upstream without storing, the bytes
// are right, and the cache stays within the limit.
func TestImageLargerThanTheLimitReadsRight(t *testing.T) {
	need(t, "sha256sum", "getfattr", "du")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"big.img": 8 << 20})
	up := startNginx(t, root, false)
	m := startMount(t, up.url, "", "--max-size", "4M")
	for range 2 {
		if got := sha256sum(t, m.path("big.img")); got != imgs["big.img"].sha256 {
			t.Fatalf("sha256 of an image twice the limit = %s, want %s", got, imgs["big.img"].sha256)
		}
		if du := allocated(filepath.Join(m.cacheDir, "data")); du > 4<<20 {
			t.Fatalf("data files take %d bytes, over the 4 MiB limit", du)
		}
	}
	x := xattrs(t, m.path("big.img"))
	if x["state"] != "partial" || x["error"] != "" {
		t.Errorf("image larger than the limit: state %q error %q, want partial and no error", x["state"], x["error"])
	}
	m.unmount(t)
}
