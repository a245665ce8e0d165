package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// smallFS mounts a tmpfs of the given size (like "24m"), mode 0700, and
// unmounts it at cleanup (registered first, so it runs after the
// cleanups of mounts that use it).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// TestFullCacheFilesystem runs a cache on a 24 MiB tmpfs and reads more
// than fits: what fits is cached and stays correct, the image that does
// not fit is read around the cache (from the upstream, not stored) and its
// error attribute says why, the index keeps working (a clean restart
// lists and keeps the cached images).
func TestFullCacheFilesystem(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr", "df")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4 << 20, "b.img": 4 << 20, "big.img": 20 << 20})
	origin := startOrigin(t, root)
	cacheDir := smallFS(t, "24m")
	// A size limit above the filesystem's size: the filesystem fills up
	// before the limit is reached (as when other files share it).
	m := startMount(t, origin.url, cacheDir, "--max-size", "1G")
	for _, name := range []string{"a.img", "b.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s: wrong bytes", name)
		}
	}
	t.Logf("cache filesystem after two images: %s", strings.TrimSpace(run(t, "df", "-h", cacheDir)))

	start := time.Now()
	got := sha256sum(t, m.path("big.img"))
	x := xattrs(t, m.path("big.img"))
	t.Logf("read of a 20 MiB image that does not fit took %v; cached %s bytes of it; error attribute %q",
		time.Since(start), x["cached_bytes"], x["error"])
	if got != imgs["big.img"].sha256 {
		t.Fatal("big.img read wrong around a full cache")
	}
	if !strings.Contains(x["error"], "full") {
		t.Fatalf("user.imgcache.error = %q, want it to say the cache filesystem is full", x["error"])
	}
	t.Logf("cache filesystem after: %s", strings.TrimSpace(run(t, "df", "-h", cacheDir)))
	var st syscall.Statfs_t
	if err := syscall.Statfs(cacheDir, &st); err != nil {
		t.Fatal(err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < 4<<20 {
		t.Fatalf("only %d KiB left free: the reserve for the index (8 MiB) was not kept", free>>10)
	}

	for _, name := range []string{"a.img", "b.img"} {
		if st := xattrs(t, m.path(name))["state"]; st != "complete" && st != "verified" {
			t.Fatalf("%s lost from the cache by a full filesystem: state %q", name, st)
		}
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s damaged by a full cache filesystem", name)
		}
	}
	m.unmount(t)

	// The index survived: a restart (with the upstream gone, so nothing
	// can be fetched again) still has both images complete.
	if err := origin.proc.stop(); err != nil {
		t.Fatal(err)
	}
	m = startMount(t, origin.url, cacheDir, "--max-size", "1G")
	for _, name := range []string{"a.img", "b.img"} {
		if st := xattrs(t, m.path(name))["state"]; st != "complete" && st != "verified" {
			t.Fatalf("%s after restart: state %q", name, st)
		}
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s after restart: wrong bytes", name)
		}
	}
}
