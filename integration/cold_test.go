package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgcache/imgcache/control"
)

// TestColdImagesThroughAMount: images nothing has happened to are held
// cold (cachecore's cold.go; stats' images_cold) and behave like any other
// through a real mount. Listing them (ls, ls -f, find, imgcache ls)
// leaves them cold (the mount lists with plain READDIR: READDIRPLUS
// looked up every entry); a stat, an attribute, a read, a pin, an evict
// each take one as it is and show what it is; verify reports them; a
// refresh that changes one or drops one does so; a remount holds cold
// again those that only were looked at.
func TestColdImagesThroughAMount(t *testing.T) {
	need(t, "nginx", "ls", "find", "stat", "cat", "getfattr")
	const n = 2000
	root := t.TempDir()
	names := scaleImages(t, root, n) // each file holds its name
	up := startNginx(t, root, true)
	m := startMount(t, up.url, "")
	stats := func() control.Stats {
		t.Helper()
		var st control.Stats
		cliJSON(t, &st, "stats", "--cache-dir", m.cacheDir)
		return st
	}
	wantCold := func(when string, want int) {
		t.Helper()
		if st := stats(); st.ImagesCold != want {
			t.Fatalf("%s: %d of %d images cold, want %d", when, st.ImagesCold, st.Images, want)
		}
	}
	wantCold("mounted", n)

	run(t, "ls", m.path("big"))
	run(t, "ls", "-f", m.path("big"))
	if got := strings.Fields(run(t, "find", m.dir, "-type", "f")); len(got) != n {
		t.Fatalf("find: %d files, want %d", len(got), n)
	}
	var listed []control.Image
	cliJSON(t, &listed, "ls", "--cache-dir", m.cacheDir)
	if len(listed) != n || listed[0].Name != names[0] || listed[5].State != "absent" {
		t.Fatalf("imgcache ls: %d images, first %+v", len(listed), listed[0])
	}
	wantCold("listed", n)

	// Each use takes one image, and shows it as it is.
	if got := strings.TrimSpace(run(t, "stat", "-c", "%s %h %b", m.path("big/e-00007.img"))); got != "15 1 0" {
		t.Errorf("stat of a cold image: %q, want size 15, 1 link, 0 blocks", got)
	}
	if x := xattrs(t, m.path("big/e-00008.img")); x["state"] != "absent" || x["cached_bytes"] != "0" || x["size"] != "15" {
		t.Errorf("attributes of a cold image: %v", x)
	}
	if got := run(t, "cat", m.path("big/e-00009.img")); got != "big/e-00009.img" {
		t.Fatalf("cat of a cold image: %q", got)
	}
	cliOK(t, "pin", "--cache-dir", m.cacheDir, "big/e-00010.img")
	waitUntil(t, "the pinned image to be complete", func() bool {
		return xattrs(t, m.path("big/e-00010.img"))["state"] == "complete"
	})
	cliOK(t, "evict", "--cache-dir", m.cacheDir, "big/e-00011.img")
	wantCold("after a stat, an attribute read, a read, a pin and an evict", n-5)
	var vr control.VerifyResult
	cliJSON(t, &vr, "verify", "--cache-dir", m.cacheDir, "big")
	if vr.Images != n-3 || len(vr.Reports) != n-3 || vr.Reports[0].Name != "big/e-00000.img" || vr.Reports[0].State != "absent" {
		t.Fatalf("verify big: %d images, %d reports, first %+v", vr.Images, len(vr.Reports), vr.Reports[0])
	}
	wantCold("verified", n-5)

	// A refresh: a new version of one cold image (another size), one
	// dropped.
	if err := os.WriteFile(filepath.Join(root, "big/e-00012.img"), []byte("a new version"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "big/e-00013.img")); err != nil {
		t.Fatal(err)
	}
	if err := m.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil { // a reload refreshes the catalog
		t.Fatal(err)
	}
	waitUntil(t, "the refresh to drop big/e-00013.img", func() bool {
		var imgs []control.Image
		cliJSON(t, &imgs, "ls", "--cache-dir", m.cacheDir, "--prefix", "big/e-0001", "--limit", "4")
		return len(imgs) == 4 && imgs[3].Name == "big/e-00014.img"
	})
	wantCold("refreshed", n-6)
	if got := run(t, "cat", m.path("big/e-00012.img")); got != "a new version" {
		t.Fatalf("cat of a cold image changed upstream: %q", got)
	}
	if _, err := os.Stat(m.path("big/e-00013.img")); !os.IsNotExist(err) {
		t.Fatalf("an image dropped upstream: stat says %v", err)
	}
	m.unmount(t)

	// Remounted: what was read, pinned or evicted (a chunk map was
	// written) is hot; what was only looked at (stat, attributes) is cold
	// again.
	m = startMount(t, up.url, m.cacheDir)
	wantCold("remounted", n-1-4)
	if x := xattrs(t, m.path("big/e-00010.img")); x["state"] != "complete" || x["pinned"] != "1" {
		t.Errorf("the pinned image after a remount: %v", x)
	}
	if x := xattrs(t, m.path("big/e-00009.img")); x["cached_bytes"] != "15" || x["hits"] != "1" {
		t.Errorf("the image read, after a remount: %v", x)
	}
	if got := run(t, "cat", m.path("big/e-00007.img")); got != "big/e-00007.img" {
		t.Fatalf("cat after a remount: %q", got)
	}
	wantCold("one more read", n-1-4-1)
}
