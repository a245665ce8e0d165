package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDamagedIndex damages the index of a cache (garbage in a table, a
// MANIFEST cut short) and starts a mount on it. It used to stop with a
// stack trace, or "manifest has bad magic" and no hint. Now the start
// fails with one line that says what is damaged and to use
// --rebuild-index; with it the index is moved aside and rebuilt, the
// images whose bytes can be vouched for are served from the cache
// without a byte fetched, and the partial one (no sums to vouch for it)
// is fetched again.
func TestDamagedIndex(t *testing.T) {
	need(t, "cat", "sha256sum", "getfattr", "dd", "cp")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3 << 20, "b.img": 2 << 20, "c.img": 4 << 20})
	origin := startOrigin(t, root)
	clean := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, origin.url, clean)
	checkImage(t, m, imgs["a.img"])
	checkImage(t, m, imgs["b.img"])
	waitCached(t, m, []string{"a.img", "b.img"})
	run(t, "dd", "if="+m.path("c.img"), "of=/dev/null", "bs=64K", "count=1")
	m.unmount(t)

	damages := map[string]func(t *testing.T, index string){
		"garbage in a table": func(t *testing.T, index string) {
			tables, _ := filepath.Glob(filepath.Join(index, "*.sst"))
			if len(tables) == 0 {
				t.Fatal("no table")
			}
			run(t, "dd", "if=/dev/urandom", "of="+tables[0], "bs=1K", "count=2", "seek=1", "conv=notrunc")
		},
		"a MANIFEST cut short": func(t *testing.T, index string) {
			if err := os.Truncate(filepath.Join(index, "MANIFEST"), 5); err != nil {
				t.Fatal(err)
			}
		},
	}
	for what, damage := range damages {
		t.Run(strings.ReplaceAll(what, " ", "_"), func(t *testing.T) {
			cacheDir := filepath.Join(t.TempDir(), "cache")
			run(t, "cp", "-a", clean, cacheDir)
			damage(t, filepath.Join(cacheDir, "index"))

			out, err := runErr(bin, "mount", "--cache-dir", cacheDir, origin.url, t.TempDir())
			t.Logf("start on an index with %s: %v: %s", what, err, strings.TrimSpace(out))
			if err == nil || strings.Count(strings.TrimSpace(out), "\n") != 0 ||
				!strings.Contains(out, "damaged") || !strings.Contains(out, "--rebuild-index") {
				t.Fatalf("want one line saying the index is damaged and to use --rebuild-index, got %v:\n%s", err, out)
			}

			before := origin.bytesServed(t)
			m := startMount(t, origin.url, cacheDir, "--rebuild-index")
			if !strings.Contains(m.proc.stderr.String(), "index rebuilt") {
				t.Fatalf("no log line about the rebuild:\n%s", m.proc.stderr.String())
			}
			if aside, _ := filepath.Glob(filepath.Join(cacheDir, "index.damaged-*")); len(aside) != 1 {
				t.Fatalf("the damaged index is not kept aside: %v", aside)
			}
			for _, name := range []string{"a.img", "b.img"} {
				if st := xattrs(t, m.path(name))["state"]; st != "verified" {
					t.Fatalf("%s after the rebuild: %s, want verified", name, st)
				}
			}
			if st := xattrs(t, m.path("c.img"))["state"]; st != "absent" {
				t.Fatalf("c.img (partial, nothing to vouch for it) after the rebuild: %s, want absent", st)
			}
			for _, img := range imgs {
				checkImage(t, m, img)
			}
			after := origin.bytesServed(t)
			for _, name := range []string{"a.img", "b.img"} {
				if n := after[name] - before[name]; n != 0 {
					t.Fatalf("%s: %d bytes fetched again after the rebuild, want none", name, n)
				}
			}
			m.unmount(t)
		})
	}
}
