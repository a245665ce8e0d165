package integration

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCacheDirRemovedWhileMounted removes the cache directory under a
// mount in use. It used to answer EIO for cached images, with no error
// attribute and no log line, and SIGTERM then hung for good in badger's
// Close. Now the daemon says so (log, the root's
// user.imgcache.cache_error), an image held open keeps being served from
// its open data file (the upstream stopped), the others are read around
// the cache with the reason in user.imgcache.error, and SIGTERM ends the
// daemon.
func TestCacheDirRemovedWhileMounted(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr", "sh")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 2 << 20, "b.img": 2 << 20})
	origin := startOrigin(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, origin.url, cacheDir, "--flush-interval", "100ms")
	for _, img := range imgs {
		checkImage(t, m, img)
	}
	waitCached(t, m, []string{"a.img", "b.img"})

	// Another process holds a.img open, as a VM holds its disk.
	holder := exec.Command("sh", "-c", "exec 3<\"$1\"; read x", "sh", m.path("a.img"))
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); holder.Wait() }()
	waitUntil(t, "a.img to be open", func() bool { return xattrs(t, m.path("a.img"))["state"] == "verified" && opened(t, holder.Process.Pid) })

	if err := os.RemoveAll(cacheDir); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the root to say the cache directory is gone", func() bool {
		return strings.Contains(xattrs(t, m.dir)["cache_error"], "removed")
	})
	if !strings.Contains(m.proc.stderr.String(), "cache storage lost") {
		t.Fatalf("no log line about the lost cache directory:\n%s", m.proc.stderr.String())
	}
	checkImage(t, m, imgs["b.img"]) // its file went: read around the cache
	if e := xattrs(t, m.path("b.img"))["error"]; !strings.Contains(e, "removed") {
		t.Fatalf("b.img: user.imgcache.error = %q, want it to say the cache directory was removed", e)
	}
	if err := origin.proc.stop(); err != nil {
		t.Fatal(err)
	}
	checkImage(t, m, imgs["a.img"]) // from its open data file: no upstream now

	start := time.Now()
	m.unmount(t) // SIGTERM: exits 0 (within 20s) and leaves nothing mounted
	t.Logf("exit %v after SIGTERM", time.Since(start))
}

// opened says whether process pid has a file open on descriptor 3.
func opened(t *testing.T, pid int) bool {
	_, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/3")
	return err == nil
}
