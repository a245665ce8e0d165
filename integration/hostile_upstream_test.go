package integration

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
