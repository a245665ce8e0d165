package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/control"
)

// The management CLI (imgcache ls, stat, evict, ...) run as a separate
// process against a real mount's control socket, and against a cache
// directory with no daemon.

// manageImages are served by the tests of this file: one in a
// subdirectory with a space in its name.
var manageImages = map[string]int64{
	"a.img":         3<<20 + 11,
	"sub/b c.img":   200 << 10,
	"c.img":         1 << 20,
	"deep/er/d.img": 5000,
}

// cliResult is one run of the imgcache binary.
type cliResult struct {
	stdout, stderr string
	code           int
}

// cli runs imgcache with args, keeping stdout (tables, JSON) apart from
// stderr (notes and errors).
func cli(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("imgcache %v: %v", args, err)
	}
	return r
}

// cliOK runs imgcache and fails the test unless it exits 0.
func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	r := cli(t, args...)
	if r.code != 0 {
		t.Fatalf("imgcache %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// cliJSON runs imgcache with --json and decodes its output into v.
func cliJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := cliOK(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("imgcache %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func byName(imgs []control.Image) map[string]control.Image {
	m := map[string]control.Image{}
	for _, i := range imgs {
		m[i.Name] = i
	}
	return m
}

// checkTable checks that a table's columns line up: every row has the
// header's word col starting at the same offset as the header.
func checkTable(t *testing.T, out, col string, cell func(row string) string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	at := strings.Index(lines[0], col)
	if at < 0 {
		t.Fatalf("table has no %s column:\n%s", col, out)
	}
	for _, l := range lines[1:] {
		if c := cell(l); at >= len(l) || !strings.HasPrefix(l[at:], c) {
			t.Errorf("column %s is not aligned (want %q at %d):\n%s", col, c, at, out)
		}
	}
}

func TestManageCLIOnRealMount(t *testing.T) {
	need(t, "cat", "curl")
	root := t.TempDir()
	imgs := makeImages(t, root, manageImages)
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	dir := []string{"--cache-dir", m.cacheDir}

	// The socket is there, private to its owner.
	fi, err := os.Stat(filepath.Join(m.cacheDir, "control.sock"))
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v", fi, err)
	}

	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img: wrong bytes")
	}
	run(t, "head", "-c", "1000", m.path("sub/b c.img"))

	// ls --json: every image, with its cache state.
	var list []control.Image
	waitUntil(t, "a.img to be verified", func() bool {
		cliJSON(t, &list, append([]string{"ls"}, dir...)...)
		return byName(list)["a.img"].State == "verified"
	})
	got := byName(list)
	if len(list) != len(manageImages) {
		t.Fatalf("ls --json lists %d images, want %d: %+v", len(list), len(manageImages), list)
	}
	for name, img := range imgs {
		if got[name].Size != img.size {
			t.Errorf("ls --json: %s has size %d, want %d", name, got[name].Size, img.size)
		}
	}
	if a := got["a.img"]; a.CachedBytes != imgs["a.img"].size || a.Hits != 1 || a.LastAccess.IsZero() ||
		a.Digest != "sha256:"+imgs["a.img"].sha256 || a.Pinned {
		t.Errorf("ls --json a.img: %+v", a)
	}
	if c := got["c.img"]; c.State != "absent" || c.CachedBytes != 0 || c.Hits != 0 {
		t.Errorf("ls --json c.img (never read): %+v", c)
	}
	if b := got["sub/b c.img"]; b.Hits != 1 || b.CachedBytes == 0 {
		t.Errorf("ls --json sub/b c.img: %+v", b)
	}

	// ls: an aligned table.
	out := cliOK(t, append([]string{"ls"}, dir...)...)
	if !strings.HasPrefix(out, "NAME ") || strings.Count(out, "\n") != len(manageImages)+1 {
		t.Fatalf("ls:\n%s", out)
	}
	checkTable(t, out, "STATE", func(row string) string { return got[rowName(row, got)].State })
	checkTable(t, out, "SIZE", func(row string) string { return "" })

	// stat, of a name with a space in a subdirectory.
	var b control.Image
	cliJSON(t, &b, append([]string{"stat", "sub/b c.img"}, dir...)...)
	if b.Name != "sub/b c.img" || b.Size != imgs["sub/b c.img"].size || b.Hits != 1 {
		t.Errorf("stat --json: %+v", b)
	}
	out = cliOK(t, append([]string{"stat", "a.img"}, dir...)...)
	for _, want := range []string{"name:", "a.img", "state:", "verified", "hits:", "1", "digest:", imgs["a.img"].sha256, "pinned:"} {
		if !strings.Contains(out, want) {
			t.Errorf("stat a.img does not show %q:\n%s", want, out)
		}
	}

	// An unknown image: exit 1, one line naming it.
	for _, args := range [][]string{{"stat", "nope.img"}, {"verify", "nope.img"}, {"stat", "sub/nope.img"}} {
		r := cli(t, append(args, dir...)...)
		if r.code != 1 || !strings.Contains(r.stderr, args[1]) || !strings.Contains(r.stderr, "no such image") ||
			strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
			t.Errorf("imgcache %v: exit %d, stderr %q; want exit 1 and one line naming the image", args, r.code, r.stderr)
		}
	}

	// stats: counters of what happened above.
	var st control.Stats
	cliJSON(t, &st, append([]string{"stats"}, dir...)...)
	if st.Images != len(manageImages) || st.Opens < 2 || st.UpstreamBytes < uint64(imgs["a.img"].size) ||
		st.ServedBytes == 0 || st.Misses == 0 || st.CacheBytes < imgs["a.img"].size || st.IndexBytes == 0 ||
		st.ByState["verified"] < 1 || st.ByState["absent"] < 1 || st.ServeMode == "" || st.Mountpoint != m.dir ||
		st.Source != origin.url {
		t.Errorf("stats --json: %+v", st)
	}
	out = cliOK(t, append([]string{"stats"}, dir...)...)
	for _, want := range []string{"serve mode:", st.ServeMode, "hits:", "misses:", "upstream bytes:", "index bytes:", "fetches in flight:"} {
		if !strings.Contains(out, want) {
			t.Errorf("stats does not show %q:\n%s", want, out)
		}
	}

	// /metrics, read by curl over the socket.
	metrics := run(t, "curl", "-sf", "--unix-socket", filepath.Join(m.cacheDir, "control.sock"), "http://imgcache/metrics")
	for _, want := range []string{"imgcache_hits_total ", "imgcache_misses_total ", "imgcache_upstream_bytes_total ",
		"imgcache_served_bytes_total ", "imgcache_evictions_total ", "imgcache_errors_total ", "imgcache_cache_bytes ",
		"imgcache_index_bytes ", "imgcache_queue_length ", "imgcache_fetches_in_flight ", `imgcache_images{state="verified"} `,
		"# TYPE imgcache_hits_total counter"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %q:\n%s", want, metrics)
		}
	}
	// The API answers unknown images with a JSON 404.
	body, err := runErr("curl", "-s", "-w", " %{http_code}", "--unix-socket", filepath.Join(m.cacheDir, "control.sock"),
		"http://imgcache/v1/images/sub/nope.img")
	if err != nil || !strings.HasSuffix(body, " 404") || !strings.Contains(body, `"error"`) {
		t.Errorf("GET /v1/images/sub/nope.img: %v %s", err, body)
	}

	// verify: a.img's chunks match; then a byte of its cache file is
	// damaged behind the daemon's back, and verify finds and drops it.
	var v control.VerifyResult
	cliJSON(t, &v, append([]string{"verify", "a.img"}, dir...)...)
	if v.Images != 1 || v.BadChunks != 0 || len(v.Reports) != 1 || v.Reports[0].Failed() || v.Chunks == 0 {
		t.Fatalf("verify a.img: %+v", v)
	}
	cliJSON(t, &v, append([]string{"verify"}, dir...)...)
	if v.Images != len(manageImages) || v.BadChunks != 0 || v.Invalid != 0 {
		t.Fatalf("verify (all): %+v", v)
	}
	damage(t, m.cacheDir, imgs["a.img"].size)
	r := cli(t, append([]string{"verify", "a.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED") || !strings.Contains(r.stderr, "failed verification") {
		t.Fatalf("verify of a damaged image: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var a control.Image
	cliJSON(t, &a, append([]string{"stat", "a.img"}, dir...)...)
	if a.State != "partial" || a.CachedBytes >= imgs["a.img"].size || a.Error == "" {
		t.Errorf("a.img after verify dropped a damaged chunk: %+v", a)
	}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Error("a.img: wrong bytes after its damaged chunk was dropped")
	}
}

// rowName finds which image a table row is about (names may hold spaces).
func rowName(row string, imgs map[string]control.Image) string {
	best := ""
	for name := range imgs {
		if strings.HasPrefix(row, name+" ") && len(name) > len(best) {
			best = name
		}
	}
	return best
}

// damage flips a byte in the middle of the only data file of the given
// size in a cache directory.
func damage(t *testing.T, cacheDir string, size int64) {
	t.Helper()
	var path string
	filepath.Walk(filepath.Join(cacheDir, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() == size {
			path = p
		}
		return nil
	})
	if path == "" {
		t.Fatalf("no data file of %d bytes in %s", size, cacheDir)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, size/2); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, size/2); err != nil {
		t.Fatal(err)
	}
}

func TestManageCLIWithoutDaemon(t *testing.T) {
	root := t.TempDir()
	imgs := makeImages(t, root, manageImages)
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	dir := []string{"--cache-dir", m.cacheDir}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img: wrong bytes")
	}
	waitUntil(t, "a.img to be verified", func() bool {
		var a control.Image
		cliJSON(t, &a, append([]string{"stat", "a.img"}, dir...)...)
		return a.State == "verified"
	})
	cliOK(t, append([]string{"pin", "sub/*"}, dir...)...)
	m.unmount(t)
	if _, err := os.Stat(filepath.Join(m.cacheDir, "control.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("control socket after the daemon exited: %v", err)
	}

	// A daemon that exited cleanly leaves an index that opens read-only;
	// one killed with -9 leaves logs to replay, so a copy is read.
	checkOffline := func(when, note string) {
		t.Helper()
		var list []control.Image
		cliJSON(t, &list, append([]string{"ls"}, dir...)...)
		got := byName(list)
		if len(list) != len(manageImages) || got["a.img"].State != "verified" ||
			got["a.img"].CachedBytes != imgs["a.img"].size || got["a.img"].Hits != 1 || got["deep/er/d.img"].State != "absent" {
			t.Errorf("%s: ls --json reading the index: %+v", when, list)
		}
		r := cli(t, append([]string{"ls"}, dir...)...)
		if r.code != 0 || !strings.Contains(r.stderr, "is not mounted; showing "+note+" as last saved") ||
			!strings.Contains(r.stdout, "a.img") || !strings.Contains(r.stdout, "verified") {
			t.Errorf("%s: ls reading the index: exit %d\n%s%s", when, r.code, r.stdout, r.stderr)
		}
		var b control.Image
		cliJSON(t, &b, append([]string{"stat", "sub/b c.img"}, dir...)...)
		if b.Name != "sub/b c.img" || b.Size != imgs["sub/b c.img"].size {
			t.Errorf("%s: stat --json reading the index: %+v", when, b)
		}
		r = cli(t, append([]string{"stat", "nope.img"}, dir...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "no such image") {
			t.Errorf("%s: stat of an unknown image reading the index: exit %d %s", when, r.code, r.stderr)
		}
		var pins []control.Pin
		cliJSON(t, &pins, append([]string{"pins"}, dir...)...)
		if len(pins) != 1 || pins[0].Kind != "glob" || pins[0].Pattern != "sub/*" || pins[0].Images != nil {
			t.Errorf("%s: pins --json reading the index: %+v", when, pins)
		}
	}
	checkOffline("after a clean exit", "its index")

	// Everything else needs the daemon, and says so.
	notMounted := "the cache at " + m.cacheDir + " is not mounted (no daemon on " + m.cacheDir + "/control.sock)"
	for _, args := range [][]string{{"evict", "a.img"}, {"evict", "--all"}, {"pin", "a.img"}, {"unpin", "a.img"},
		{"pin", "--alias", "debian/12"}, {"unpin", "images/*"},
		{"prefetch", "a.img"}, {"prefetch", "--wait", "a.img"}, {"prune"}, {"clean"}, {"stats"}, {"verify"}, {"verify", "a.img"}} {
		r := cli(t, append(args, dir...)...)
		if r.code != 1 || !strings.Contains(r.stderr, notMounted) || r.stdout != "" {
			t.Errorf("imgcache %v with no daemon: exit %d, stderr %q; want exit 1 and %q", args, r.code, r.stderr, notMounted)
		}
	}

	// A daemon killed with -9 leaves its socket and an index it did not
	// close: the socket refuses connections, the index is read anyway.
	m = startMount(t, origin.url, m.cacheDir)
	run(t, "head", "-c", "100", m.path("c.img"))
	m.proc.kill()
	exec.Command("umount", "-l", m.dir).Run()
	if _, err := os.Stat(filepath.Join(m.cacheDir, "control.sock")); err != nil {
		t.Fatalf("the killed daemon's socket: %v", err)
	}
	checkOffline("after kill -9", "a copy of its index")
	if r := cli(t, append([]string{"stats"}, dir...)...); r.code != 1 || !strings.Contains(r.stderr, notMounted) {
		t.Errorf("stats after kill -9: exit %d %s", r.code, r.stderr)
	}

	// A directory that is no cache at all.
	empty := t.TempDir()
	if r := cli(t, "ls", "--cache-dir", empty); r.code != 1 || !strings.Contains(r.stderr, "not mounted") ||
		!strings.Contains(r.stderr, "no cache index") {
		t.Errorf("ls of a directory that is no cache: exit %d %s", r.code, r.stderr)
	}
}

func TestManageHelpAndUsage(t *testing.T) {
	for _, name := range []string{"ls", "stat", "evict", "pin", "unpin", "pins", "prefetch", "prune", "clean", "stats", "verify"} {
		out := cliOK(t, "help", name)
		if !strings.Contains(out, "Usage: imgcache "+name) || !strings.Contains(out, "cache-dir") || !strings.Contains(out, "json") {
			t.Errorf("imgcache help %s:\n%s", name, out)
		}
	}
	if out := cliOK(t, "--help"); !strings.Contains(out, "imgcache prefetch") || !strings.Contains(out, "imgcache verify") {
		t.Errorf("imgcache --help does not list the management commands:\n%s", out)
	}
	cacheDir := t.TempDir()
	for _, args := range [][]string{{"stat"}, {"stat", "a", "b"}, {"evict"}, {"evict", "--all", "a.img"}, {"pin"},
		{"unpin", "a", "b"}, {"pin", "--alias", "--name", "x"}, {"pins", "x"}, {"prefetch"}, {"prune", "x"}, {"clean", "x"}, {"stats", "x"}, {"verify", "a", "b"}, {"ls", "x"},
		{"ls", "--bogus"}} {
		r := cli(t, append(args, "--cache-dir", cacheDir)...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("imgcache %v: exit %d, stderr %q; want a one-line usage error, exit 2", args, r.code, r.stderr)
		}
	}
}
