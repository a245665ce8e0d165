package integration

import (
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pkg/xattr"

	"github.com/imgcache/imgcache/control"
)

// The management CLI's actions (evict, pin, unpin, prefetch, prune,
// clean) on a real mount, run as separate processes.

func TestManageActionsOnRealMount(t *testing.T) {
	need(t, "cat", "curl", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{
		"a.img":       3 << 20,
		"big.img":     4<<20 + 100,
		"c.img":       1 << 20,
		"sub/b c.img": 200 << 10,
		"open.img":    300 << 10,
		"huge.img":    12 << 20, // only ever read in part
	})
	origin := startOrigin(t, root)
	// Room for 16M, pruned down to 8M; partial images with no fetch for
	// 2s are stalled.
	m := startMount(t, origin.url, "", "--max-size", "16M", "--low-water", "50", "--stall-time", "2s")
	dir := []string{"--cache-dir", m.cacheDir}
	stat := func(name string) control.Image {
		t.Helper()
		var img control.Image
		cliJSON(t, &img, append([]string{"stat", name}, dir...)...)
		return img
	}

	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img: wrong bytes")
	}
	waitUntil(t, "a.img to be verified", func() bool { return stat("a.img").State == "verified" })

	// pin / unpin, and a pinned image is not evicted.
	var img control.Image
	cliJSON(t, &img, append([]string{"pin", "a.img"}, dir...)...)
	if !img.Pinned || img.Name != "a.img" {
		t.Fatalf("pin --json: %+v", img)
	}
	if out := cliOK(t, append([]string{"pin", "sub/b c.img"}, dir...)...); !strings.Contains(out, "pinned sub/b c.img") {
		t.Errorf("pin: %q", out)
	}
	var pins []control.Pin
	runJSON(t, &pins, "curl", "-sf", "--unix-socket", filepath.Join(m.cacheDir, "control.sock"), "http://imgcache/v1/pins")
	if len(pins) != 2 || pins[0].Kind != "name" || pins[0].Pattern != "a.img" || pins[1].Pattern != "sub/b c.img" ||
		!slices.Equal(pins[1].Images, []string{"sub/b c.img"}) {
		t.Errorf("GET /v1/pins: %+v", pins)
	}
	// A glob pins what it matches; the name it pins cannot be unpinned
	// alone.
	if out := cliOK(t, append([]string{"pin", "s*/*"}, dir...)...); !strings.Contains(out, "pinned glob s*/*: 1 image") {
		t.Errorf("pin of a glob: %q", out)
	}
	if out := cliOK(t, append([]string{"pins"}, dir...)...); !strings.Contains(out, "glob  s*/*") || !strings.Contains(out, "  sub/b c.img") {
		t.Errorf("pins:\n%s", out)
	}
	if out := cliOK(t, append([]string{"unpin", "sub/b c.img"}, dir...)...); !strings.Contains(out, "which another rule pins too") {
		t.Errorf("unpin of a name a glob pins too: %q", out)
	}
	if r := cli(t, append([]string{"unpin", "sub/b c.img"}, dir...)...); r.code != 1 || !strings.Contains(r.stderr, `pinned by glob "s*/*"`) {
		t.Errorf("unpin of an image a glob pins: exit %d %q, want the glob named", r.code, r.stderr)
	}
	if err := xattr.Set(m.path("sub/b c.img"), "user.imgcache.pin", []byte("0")); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("user.imgcache.pin 0 of an image a glob pins: %v, want EBUSY", err)
	}
	cliOK(t, append([]string{"unpin", "s*/*"}, dir...)...)
	cliOK(t, append([]string{"pin", "sub/b c.img"}, dir...)...)
	r := cli(t, append([]string{"evict", "a.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "pinned") {
		t.Errorf("evict of a pinned image: exit %d %q", r.code, r.stderr)
	}
	if out := cliOK(t, append([]string{"unpin", "sub/b c.img"}, dir...)...); !strings.Contains(out, "unpinned sub/b c.img") {
		t.Errorf("unpin: %q", out)
	}
	cliJSON(t, &img, append([]string{"unpin", "a.img"}, dir...)...)
	if img.Pinned {
		t.Fatalf("unpin --json: %+v", img)
	}
	waitUntil(t, "b c.img to be fetched by its pin", func() bool { return stat("sub/b c.img").State == "verified" })

	// evict: the image stays listed, absent, and reads back correctly.
	var ev control.EvictResult
	cliJSON(t, &ev, append([]string{"evict", "a.img"}, dir...)...)
	if strings.Join(ev.Evicted, ",") != "a.img" || ev.FreedBytes < imgs["a.img"].size {
		t.Errorf("evict --json a.img: %+v", ev)
	}
	if a := stat("a.img"); a.State != "absent" || a.CachedBytes != 0 {
		t.Errorf("a.img after evict: %+v", a)
	}
	if n := duBytes(t, m.path("a.img")); n != 0 {
		t.Errorf("du of an evicted image: %d", n)
	}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img: wrong bytes after evict")
	}

	// An image open in another process is not evicted, alone or by --all.
	holder := exec.Command("bash", "-c", `exec 3<"$1"; head -c 1 <&3 >/dev/null; echo open; sleep 60`, "-", m.path("open.img"))
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	if _, err := out.Read(make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	r = cli(t, append([]string{"evict", "open.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "open") {
		t.Errorf("evict of an open image: exit %d %q", r.code, r.stderr)
	}
	cliOK(t, append([]string{"pin", "c.img"}, dir...)...)
	waitUntil(t, "c.img to be fetched by its pin", func() bool { return stat("c.img").State == "verified" })
	cliJSON(t, &ev, append([]string{"evict", "--all"}, dir...)...)
	slices.Sort(ev.Evicted)
	slices.Sort(ev.Skipped)
	if strings.Join(ev.Evicted, ",") != "a.img,sub/b c.img" || strings.Join(ev.Skipped, ",") != "c.img,open.img" {
		t.Errorf("evict --all --json: %+v; want a.img and sub/b c.img evicted, c.img (pinned) and open.img kept", ev)
	}
	holder.Process.Kill()
	holder.Wait()
	cliOK(t, append([]string{"unpin", "c.img"}, dir...)...)
	if out := cliOK(t, append([]string{"evict", "--all"}, dir...)...); !strings.Contains(out, "evicted ") || !strings.Contains(out, "freed ") {
		t.Errorf("evict --all: %q", out)
	}

	// prefetch --wait, not on a terminal: plain lines, then the state.
	out2 := cliOK(t, append([]string{"prefetch", "--wait", "big.img", "sub/b c.img"}, dir...)...)
	lines := strings.Split(strings.TrimSpace(out2), "\n")
	if !strings.HasPrefix(lines[0], "queued big.img") || !strings.HasPrefix(lines[1], "queued sub/b c.img") ||
		!strings.HasPrefix(lines[len(lines)-1], "sub/b c.img: verified") || !strings.Contains(out2, "\nbig.img: verified") ||
		strings.Contains(out2, "\r") {
		t.Errorf("prefetch --wait:\n%s", out2)
	}
	if got := sha256sum(t, m.path("big.img")); got != imgs["big.img"].sha256 {
		t.Fatal("big.img: wrong bytes after prefetch")
	}
	var done []control.Image
	cliJSON(t, &done, append([]string{"prefetch", "--wait", "big.img"}, dir...)...)
	if len(done) != 1 || done[0].State != "verified" || done[0].CachedBytes != imgs["big.img"].size {
		t.Errorf("prefetch --wait --json of a cached image: %+v", done)
	}
	r = cli(t, append([]string{"prefetch", "big.img", "nope.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "nope.img") || !strings.Contains(r.stderr, "no such image") {
		t.Errorf("prefetch of an unknown image: exit %d %q", r.code, r.stderr)
	}
	// On a terminal: a progress bar, redrawn in place.
	need(t, "script")
	cliOK(t, append([]string{"evict", "big.img"}, dir...)...)
	tty := run(t, "script", "-qec", strings.Join([]string{bin, "prefetch", "--wait", "big.img", "--cache-dir", m.cacheDir}, " "), "/dev/null")
	if !strings.Contains(tty, "\r\x1b[Kbig.img [") || !strings.Contains(tty, "##########] 100%") || !strings.Contains(tty, "verified") {
		t.Errorf("prefetch --wait on a terminal: %q", tty)
	}

	var queue []string
	runJSON(t, &queue, "curl", "-sf", "--unix-socket", filepath.Join(m.cacheDir, "control.sock"), "http://imgcache/v1/queue")
	if queue == nil || len(queue) != 0 {
		t.Errorf("GET /v1/queue after the prefetches: %#v", queue)
	}

	// prune: 4M + 3M + 1M + 300K + 200K cached is over the 8M low
	// watermark, so a prune frees the least recently used.
	for _, name := range []string{"a.img", "c.img", "open.img", "sub/b c.img"} {
		run(t, "cat", m.path(name))
	}
	waitUntil(t, "the images read to be cached", func() bool {
		for _, name := range []string{"a.img", "c.img", "open.img", "sub/b c.img"} {
			if i := stat(name); i.CachedBytes != i.Size {
				return false
			}
		}
		return true
	})
	var pr control.PruneResult
	cliJSON(t, &pr, append([]string{"prune"}, dir...)...)
	if strings.Join(pr.Evicted, ",") != "big.img" || pr.FreedBytes < imgs["big.img"].size || pr.UsageBytes > pr.LowWaterBytes ||
		pr.MaxBytes != 16<<20 || pr.LowWaterBytes != 8<<20 {
		t.Errorf("prune --json: %+v", pr)
	}
	if s := stat("big.img"); s.State != "absent" {
		t.Errorf("big.img, read least recently, after prune: %+v", s)
	}
	if out := cliOK(t, append([]string{"prune"}, dir...)...); !strings.Contains(out, "evicted 0 images, freed 0; cache now") || !strings.Contains(out, "of 16M") {
		t.Errorf("prune with nothing to do: %q", out)
	}

	// clean: a partial image nobody fetches for 2s is reaped (by the
	// command, or by the cleaner's own round if it comes first).
	run(t, "head", "-c", "1000", m.path("huge.img"))
	if s := stat("huge.img"); s.State != "partial" {
		t.Fatalf("huge.img after reading 1000 bytes: %+v", s)
	}
	waitUntil(t, "clean to reap the stalled huge.img", func() bool {
		var cr control.CleanResult
		cliJSON(t, &cr, append([]string{"clean"}, dir...)...)
		if slices.Contains(cr.Removed, "huge.img") && cr.FreedBytes <= 0 {
			t.Errorf("clean --json: %+v", cr)
		}
		return stat("huge.img").State == "absent"
	})
	if out := cliOK(t, append([]string{"clean"}, dir...)...); !strings.HasPrefix(out, "removed ") {
		t.Errorf("clean: %q", out)
	}

	// prefetch --wait of an image the upstream cannot deliver fails.
	origin.proc.stop()
	r = cli(t, append([]string{"prefetch", "--wait", "huge.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stderr, `"huge.img" could not be fetched`) {
		t.Errorf("prefetch --wait with the upstream down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// It stays queued (the daemon tries again later) until dequeued.
	sock := filepath.Join(m.cacheDir, "control.sock")
	runJSON(t, &queue, "curl", "-sf", "--unix-socket", sock, "http://imgcache/v1/queue")
	if strings.Join(queue, ",") != "huge.img" {
		t.Errorf("GET /v1/queue after a failed prefetch: %q", queue)
	}
	runJSON(t, &img, "curl", "-sf", "-X", "DELETE", "--unix-socket", sock, "http://imgcache/v1/queue/huge.img")
	if img.Name != "huge.img" || img.Queued {
		t.Errorf("DELETE /v1/queue/huge.img: %+v", img)
	}
	runJSON(t, &queue, "curl", "-sf", "--unix-socket", sock, "http://imgcache/v1/queue")
	if len(queue) != 0 {
		t.Errorf("GET /v1/queue after dequeuing: %q", queue)
	}

	// stats and metrics count the evictions and show the limit.
	var st control.Stats
	cliJSON(t, &st, append([]string{"stats"}, dir...)...)
	if st.Evictions < 4 || st.MaxBytes != 16<<20 || st.CacheBytes <= 0 || st.Pinned != 0 || st.QueueLength != 0 {
		t.Errorf("stats --json: %+v", st)
	}
	metrics := run(t, "curl", "-sf", "--unix-socket", filepath.Join(m.cacheDir, "control.sock"), "http://imgcache/metrics")
	if !strings.Contains(metrics, "\nimgcache_max_bytes 1.6777216e+07\n") || strings.Contains(metrics, "\nimgcache_evictions_total 0\n") {
		t.Errorf("/metrics:\n%s", metrics)
	}
}

// runJSON runs a command and decodes its output as JSON into v.
func runJSON(t *testing.T, v any, name string, args ...string) {
	t.Helper()
	out := run(t, name, args...)
	if err := jsonUnmarshal(out, v); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
