package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashIterations is how many kill -9s TestKill9DuringFetch does:
// $IMGCACHE_CRASH_ITERATIONS, else 20.
func crashIterations(t *testing.T) int {
	if v := os.Getenv("IMGCACHE_CRASH_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("IMGCACHE_CRASH_ITERATIONS=%q: want a positive number", v)
		}
		return n
	}
	return 20
}

// TestKill9DuringFetch kills the daemon (its own process) at a random
// moment while cat reads an image through a slow upstream, then mounts
// the same cache directory afresh and checks: the mount starts (the lock
// died with the daemon), the image reads back with the source's sha256,
// and exactly the chunks the index did not record are fetched again (the
// upstream's byte count for the image during the check equals its size
// less the cached bytes the fresh mount reports).
func TestKill9DuringFetch(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr")
	iterations := crashIterations(t)
	const size = 8 << 20
	const rate = 16 << 20 // bytes per second: one image takes 0.5 s
	sizes := map[string]int64{}
	for i := range iterations {
		sizes[fmt.Sprintf("img%03d.img", i)] = size
	}
	root := t.TempDir()
	imgs := makeImages(t, root, sizes)
	origin := startOrigin(t, root)
	proxy := startThrottleProxy(t, origin.url, rate)
	cacheDir := t.TempDir()
	flags := []string{"--chunk-size", "256K", "--flush-interval", "100ms"}

	var partial, refetchedTotal, resumedTotal int64
	for i := range iterations {
		name := fmt.Sprintf("img%03d.img", i)
		m := startMount(t, proxy.url, cacheDir, flags...)
		reader := exec.Command("cat", m.path(name))
		if err := reader.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rand.Int64N(int64(600 * time.Millisecond)))
		time.Sleep(delay)
		m.proc.kill()
		reader.Wait() // it fails: its daemon is gone
		if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
			t.Fatalf("unmounting the dead daemon's mount: %v", err)
		}
		proxy.idle(t, name)
		before := proxy.delivered(name)

		m2 := startMount(t, proxy.url, cacheDir, flags...)
		cached, err := strconv.ParseInt(xattrs(t, m2.path(name))["cached_bytes"], 10, 64)
		if err != nil {
			t.Fatalf("cached_bytes after restart: %v", err)
		}
		if got := sha256sum(t, m2.path(name)); got != imgs[name].sha256 {
			t.Fatalf("iteration %d (kill after %v): sha256 %s, want %s", i, delay, got, imgs[name].sha256)
		}
		m2.unmount(t)
		refetched := proxy.delivered(name) - before
		t.Logf("iteration %2d: kill after %3dms; before the kill %7d bytes fetched; after restart %7d recorded present, %7d fetched again",
			i, delay.Milliseconds(), before, cached, refetched)
		if refetched != size-cached {
			t.Errorf("iteration %d: fetched %d bytes after the restart, want exactly the %d not recorded present",
				i, refetched, size-cached)
		}
		if cached > 0 && cached < size {
			partial++
		}
		refetchedTotal += refetched
		resumedTotal += cached
	}
	t.Logf("%d kills: %d left a partial image that resumed; %.1f MiB reused from the cache, %.1f MiB fetched after restarts",
		iterations, partial, float64(resumedTotal)/(1<<20), float64(refetchedTotal)/(1<<20))

	// Every kill left the images before it intact: with the upstream
	// gone, a fresh mount reads them all from the cache alone.
	if err := origin.proc.stop(); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, proxy.url, cacheDir, flags...)
	for name, img := range imgs {
		if got := sha256sum(t, m.path(name)); got != img.sha256 {
			t.Fatalf("%s read from the cache after all the kills: wrong bytes", name)
		}
	}
}

// TestLockNamesHolderAndDiesWithKill9 checks that a second mount over a cache
// directory in use fails at once and says who holds it, and that after a
// kill -9 of the holder the next mount starts.
func TestLockNamesHolderAndDiesWithKill9(t *testing.T) {
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, origin.url, cacheDir)

	start := time.Now()
	out, err := runErr(bin, "mount", "--cache-dir", cacheDir, origin.url, t.TempDir())
	took := time.Since(start)
	t.Logf("second daemon exited after %v: %s", took, strings.TrimSpace(out))
	if err == nil {
		t.Fatal("a second daemon on the same cache directory started")
	}
	pid := strconv.Itoa(m.proc.cmd.Process.Pid)
	if !strings.Contains(out, "in use") || !strings.Contains(out, pid) {
		t.Fatalf("second daemon's message %q does not say the directory is in use by pid %s", out, pid)
	}

	m.proc.kill()
	if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	m = startMount(t, origin.url, cacheDir)
	run(t, "cat", m.path("a.img"))
}
