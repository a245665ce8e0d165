package integration

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcache/imgcache/control"
)

// TestHostileListingSizes: a directory listing that starts listing sizes
// no image can have (2^63-1 panicked the daemon in makeslice, 2^62 ran
// it out of memory, and since the catalog is kept every restart crashed
// again) costs those entries only: they are refused with a log line, the
// daemon goes on serving the others, and a restart over the same
// listing comes up and serves the cached image.
func TestHostileListingSizes(t *testing.T) {
	need(t, "ls", "cat")
	body := []byte("0123456789")
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := `{"name":"ok.img","type":"file","mtime":"Fri, 02 Jan 2026 03:04:05 GMT","size":10}`
	var mu sync.Mutex
	listing := "[" + good + "]"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/": // nginx's autoindex_format json
			mu.Lock()
			l := listing
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(l))
		case "/ok.img":
			http.ServeContent(w, r, "ok.img", mtime, bytes.NewReader(body))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	m := startMount(t, srv.URL+"/", "", "--catalog-ttl", "1s")
	t.Cleanup(func() { // a daemon that died leaves a dead mount
		if isMounted(t, m.dir) {
			syscall.Unmount(m.dir, syscall.MNT_DETACH)
		}
	})
	if got := run(t, "cat", m.path("ok.img")); got != string(body) {
		t.Fatalf("ok.img = %q", got)
	}

	hostile := map[string]string{
		"max.img":  "9223372036854775807", // 2^63-1
		"huge.img": "4611686018427387904", // 2^62
		"over.img": "17592186044417",      // 16 TiB + 1
	}
	var l strings.Builder
	l.WriteString("[")
	for name, size := range hostile {
		l.WriteString(`{"name":"` + name + `","type":"file","mtime":"Fri, 02 Jan 2026 03:04:05 GMT","size":` + size + `},`)
	}
	l.WriteString(good + "]")
	mu.Lock()
	listing = l.String()
	mu.Unlock()

	waitUntil(t, "the daemon to refuse the hostile entries", func() bool {
		select {
		case <-m.proc.done:
			t.Fatalf("the daemon exited after the hostile listing: %v\n%s", m.proc.err, m.proc.stderr.String())
		default:
		}
		log := m.proc.stderr.String()
		for name := range hostile {
			if !strings.Contains(log, "catalog entry refused") || !strings.Contains(log, name) {
				return false
			}
		}
		return true
	})
	checkOnlyOK := func(m *mount) {
		t.Helper()
		if got := strings.Fields(run(t, "ls", m.dir)); !slices.Equal(got, []string{"ok.img"}) {
			t.Fatalf("ls shows %q, want only ok.img", got)
		}
		if got := run(t, "cat", m.path("ok.img")); got != string(body) {
			t.Fatalf("ok.img = %q", got)
		}
	}
	checkOnlyOK(m)
	m.unmount(t)

	// A restart over the same listing: up, and the cached image served.
	m = startMount(t, srv.URL+"/", m.cacheDir, "--catalog-ttl", "1s")
	waitUntil(t, "the first refresh after the restart", func() bool {
		return strings.Contains(m.proc.stderr.String(), "catalog entry refused")
	})
	checkOnlyOK(m)
	m.unmount(t)
}

// TestTricklingImageBesideAHealthyOne: an upstream that sends one of an
// image's bytes a second never trips --stall-timeout. Eight readers of it
// used to hold every fetch slot for ever: their reads failed after
// --read-timeout, as promised, but the fetches stayed in flight and every
// other image's uncached reads failed until a restart. Now the trickling
// image holds at most its share of the slots, a healthy image reads
// correctly meanwhile, and once the trickle's readers gave up its fetches
// end and their slots come back.
func TestTricklingImageBesideAHealthyOne(t *testing.T) {
	need(t, "dd", "sha256sum", "cat")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"trickle.img": 16 << 20, "healthy.img": 8 << 20, "later.img": 4 << 20})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "", "--read-timeout", "5s")
	u.inject("trickle.img", fault{kind: trickleBody, every: time.Second})

	// Eight readers, each of its own 1 MiB chunk: as many as there are
	// fetch slots.
	var readers []*exec.Cmd
	for i := range 8 {
		cmd := exec.Command("dd", "if="+m.path("trickle.img"), "of=/dev/null", "bs=4k", "count=1",
			"skip="+strconv.Itoa(i*2*256))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readers = append(readers, cmd)
	}
	t.Cleanup(func() {
		for _, r := range readers {
			if r.ProcessState == nil {
				r.Process.Kill()
				r.Wait()
			}
		}
	})
	waitUntil(t, "the trickle to hold its fetch slots", func() bool { return u.trickling.Load() >= 4 })

	if got := sha256sum(t, m.path("healthy.img")); got != imgs["healthy.img"].sha256 {
		t.Fatal("healthy.img read wrong while the trickle ran")
	}
	t.Logf("healthy.img read with %d trickling replies in flight", u.trickling.Load())

	for i, r := range readers {
		if err := r.Wait(); err == nil {
			t.Errorf("reader %d of the trickling image succeeded; want EIO after --read-timeout", i)
		}
	}
	waitUntil(t, "the trickle's fetches to end", func() bool { return u.trickling.Load() == 0 })
	var st control.Stats
	waitUntil(t, "no fetch in flight", func() bool {
		cliJSON(t, &st, "stats", "--cache-dir", m.cacheDir)
		return st.FetchesInFlight == 0
	})
	if got := sha256sum(t, m.path("later.img")); got != imgs["later.img"].sha256 {
		t.Fatal("later.img read wrong after the trickle")
	}
}
