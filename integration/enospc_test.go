package integration

import (
	"strings"
	"syscall"
	"testing"
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
// not fit gives a clear error (or is answered from the upstream), the
// index keeps working (a clean restart lists and keeps the cached images).
func TestFullCacheFilesystem(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr", "df")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4 << 20, "b.img": 4 << 20, "big.img": 20 << 20})
	origin := startOrigin(t, root)
	cacheDir := smallFS(t, "24m")
	m := startMount(t, origin.url, cacheDir)
	for _, name := range []string{"a.img", "b.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s: wrong bytes", name)
		}
	}
	t.Logf("cache filesystem after two images: %s", strings.TrimSpace(run(t, "df", "-h", cacheDir)))

	out, err := runErr("sha256sum", m.path("big.img"))
	x := xattrs(t, m.path("big.img"))
	t.Logf("reading an image that does not fit: err=%v, output %q, error attribute %q, cached %s",
		err, strings.TrimSpace(out), x["error"], x["cached_bytes"])
	if err == nil {
		if !strings.Contains(out, imgs["big.img"].sha256) {
			t.Fatalf("big.img read without error but wrong: %q", out)
		}
	} else if !strings.Contains(out, "Input/output error") || !strings.Contains(x["error"], "full") {
		t.Fatalf("big.img failed without saying the cache is full: %q, error attribute %q", out, x["error"])
	}
	t.Logf("cache filesystem after: %s", strings.TrimSpace(run(t, "df", "-h", cacheDir)))

	for _, name := range []string{"a.img", "b.img"} {
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
	m = startMount(t, origin.url, cacheDir)
	for _, name := range []string{"a.img", "b.img"} {
		if st := xattrs(t, m.path(name))["state"]; st != "complete" && st != "verified" {
			t.Fatalf("%s after restart: state %q", name, st)
		}
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s after restart: wrong bytes", name)
		}
	}
}
