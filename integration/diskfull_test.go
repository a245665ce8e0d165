package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFilledByAnotherProgram fills the cache filesystem (a 64 MiB tmpfs)
// with dd from another process under a mount in use. badger writes its
// index through mmap, and a write fault on a full filesystem used to
// kill the daemon with SIGBUS after a few hundred opens, and again at
// every start while the disk stayed full. Now: every image reads right
// (cached ones from the cache, the others around it), the root's
// user.imgcache.cache_error says why nothing is recorded, a daemon
// killed meanwhile starts again on the full disk (its index read-only),
// and once there is room the index writes again and keeps what it is
// given.
func TestFilledByAnotherProgram(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr", "dd", "sh")
	root := t.TempDir()
	sizes := map[string]int64{}
	for i := range 20 {
		sizes[fmt.Sprintf("img%02d.img", i)] = 1 << 20
	}
	imgs := makeImages(t, root, sizes)
	origin := startOrigin(t, root)
	fsDir := smallFS(t, "64m")
	cacheDir := filepath.Join(fsDir, "cache")
	filler := filepath.Join(fsDir, "fill")
	flags := []string{"--flush-interval", "100ms"}
	m := startMount(t, origin.url, cacheDir, flags...)
	cached := []string{"img00.img", "img01.img", "img02.img", "img03.img", "img04.img"}
	for _, name := range cached {
		checkImage(t, m, imgs[name])
	}
	waitCached(t, m, cached)
	m.unmount(t) // all recorded
	m = startMount(t, origin.url, cacheDir, flags...)

	fillUp(t, filler)
	// Hundreds of opens: each is a hit the flusher records.
	run(t, "sh", "-c", fmt.Sprintf(`for i in $(seq 15); do for f in %s/*.img; do cat "$f" >/dev/null || exit 1; done; done`, m.dir))
	for _, img := range imgs {
		checkImage(t, m, img)
	}
	waitUntil(t, "the root to say the cache filesystem is full", func() bool {
		return strings.Contains(xattrs(t, m.dir)["cache_error"], "full")
	})
	t.Logf("root: user.imgcache.cache_error=%q", xattrs(t, m.dir)["cache_error"])

	// Killed while the disk is full, it starts again on the full disk.
	m.proc.kill()
	if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	fillUp(t, filler) // what the dead daemon's files freed
	m = startMount(t, origin.url, cacheDir, flags...)
	if e := xattrs(t, m.dir)["cache_error"]; !strings.Contains(e, "read-only") {
		t.Fatalf("after a start on a full disk, user.imgcache.cache_error = %q, want it to say the index is read-only", e)
	}
	for _, img := range imgs {
		checkImage(t, m, img)
	}
	for _, name := range cached {
		if st := xattrs(t, m.path(name))["state"]; st != "verified" {
			t.Fatalf("%s after a start on a full disk: state %q, want verified", name, st)
		}
	}

	// Room again: the index writes again, and what it is given stays.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the root's cache_error to go once there is room", func() bool {
		_, ok := xattrs(t, m.dir)["cache_error"]
		return !ok
	})
	checkImage(t, m, imgs["img10.img"])
	waitCached(t, m, []string{"img10.img"})
	m.unmount(t)

	// A clean index on a full disk starts too.
	fillUp(t, filler)
	if err := origin.proc.stop(); err != nil {
		t.Fatal(err)
	}
	m = startMount(t, origin.url, cacheDir, flags...)
	for _, name := range append(cached, "img10.img") {
		checkImage(t, m, imgs[name]) // from the cache alone: the upstream is gone
	}
	os.Remove(filler)
	m.unmount(t)
}

// fillUp fills the filesystem of path with a file there, from another
// process (dd stops at ENOSPC).
func fillUp(t *testing.T, path string) {
	t.Helper()
	out, _ := runErr("dd", "if=/dev/zero", "of="+path, "bs=1M", "oflag=append", "conv=notrunc")
	if !strings.Contains(out, "No space left") {
		t.Fatalf("dd did not fill the filesystem: %s", out)
	}
}

// checkImage reads an image through the mount with sha256sum.
func checkImage(t *testing.T, m *mount, img image) {
	t.Helper()
	if got := sha256sum(t, m.path(img.name)); got != img.sha256 {
		t.Fatalf("%s: sha256 %s, want %s", img.name, got, img.sha256)
	}
}

// waitCached waits until the images are verified.
func waitCached(t *testing.T, m *mount, names []string) {
	t.Helper()
	for _, name := range names {
		waitUntil(t, name+" to be verified", func() bool { return xattrs(t, m.path(name))["state"] == "verified" })
	}
}
