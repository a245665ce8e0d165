package integration

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// hookProxy is an in-process proxy in front of a real upstream; hook sees
// each request first and may answer it itself (returning true).
func hookProxy(t *testing.T, target string, hook func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hook(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func isRange(r *http.Request) bool { return r.Method == http.MethodGet && r.Header.Get("Range") != "" }

// TestStalledUpstreamFailsWithinReadTimeout: an upstream that lists but
// never sends a byte of an image makes a read fail with EIO within
// --read-timeout, the reason in user.imgcache.error.
func TestStalledUpstreamFailsWithinReadTimeout(t *testing.T) {
	need(t, "cat", "getfattr")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	up := hookProxy(t, origin.url, func(w http.ResponseWriter, r *http.Request) bool {
		if !isRange(r) {
			return false
		}
		<-r.Context().Done() // stall until the client gives up
		return true
	})
	m := startMount(t, up, "", "--read-timeout", "3s", "--stall-timeout", "1s", "--retry-max", "2")
	start := time.Now()
	out, err := runErr("cat", m.path("a.img"))
	took := time.Since(start)
	x := xattrs(t, m.path("a.img"))
	t.Logf("read of a stalled image failed after %v (--read-timeout 3s, --stall-timeout 1s, --retry-max 2); error attribute %q", took, x["error"])
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("cat of a stalled image: err=%v %q, want EIO", err, out)
	}
	if !strings.Contains(x["error"], "stalled") && !strings.Contains(x["error"], "read timeout") {
		t.Fatalf("user.imgcache.error = %q, want it to say the reply stalled or timed out", x["error"])
	}
}

// TestServerErrorsAreRetried: an upstream that answers 503 (with
// Retry-After) twice, then serves, gives a correct read and no error.
func TestServerErrorsAreRetried(t *testing.T) {
	need(t, "sha256sum", "getfattr")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	var failures atomic.Int64
	up := hookProxy(t, origin.url, func(w http.ResponseWriter, r *http.Request) bool {
		if !isRange(r) || failures.Add(1) > 2 {
			return false
		}
		w.Header().Set("Retry-After", "1")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return true
	})
	m := startMount(t, up, "")
	start := time.Now()
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("wrong bytes after retries")
	}
	t.Logf("read through two 503s with Retry-After: 1 took %v", time.Since(start))
	if n := failures.Load(); n < 3 {
		t.Fatalf("%d range requests: the 503s were not retried", n)
	}
	if e, ok := xattrs(t, m.path("a.img"))["error"]; ok {
		t.Fatalf("error attribute after a successful retry: %q", e)
	}
}

// TestOfflineCatalogIsStale: with the upstream stopped the root says since
// when the catalog is stale, ls lists, cached images read, uncached ones
// fail at once (connection refused: not retried), and a restart still
// mounts and lists.
func TestOfflineCatalogIsStale(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "ls")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"cached.img": 3 << 20, "uncached.img": 3 << 20})
	origin := startOrigin(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, origin.url, cacheDir, "--catalog-ttl", "1s")
	if got := sha256sum(t, m.path("cached.img")); got != imgs["cached.img"].sha256 {
		t.Fatal("wrong bytes")
	}
	if _, ok := xattrs(t, m.dir)["catalog_stale"]; ok {
		t.Fatal("catalog_stale set while the upstream answers")
	}
	// Taken before the stop: the listener closes, and a refresh can fail,
	// well before stop returns. catalog_stale has whole seconds.
	stoppedAt := time.Now().Truncate(time.Second)
	if err := origin.proc.stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the root to say the catalog is stale", func() bool { return xattrs(t, m.dir)["catalog_stale"] != "" })
	rootX := xattrs(t, m.dir)
	t.Logf("root after the upstream stopped: catalog_stale=%q catalog_error=%q", rootX["catalog_stale"], rootX["catalog_error"])
	if since, err := time.Parse(time.RFC3339, rootX["catalog_stale"]); err != nil || since.Before(stoppedAt) {
		t.Fatalf("catalog_stale = %q (%v), want a time after the upstream stopped (%v)", rootX["catalog_stale"], err, stoppedAt)
	}
	checkOffline(t, m, imgs)
	m.unmount(t)

	m = startMount(t, origin.url, cacheDir, "--catalog-ttl", "1s")
	if got := xattrs(t, m.dir)["catalog_stale"]; got != rootX["catalog_stale"] {
		t.Fatalf("after a restart with the upstream down catalog_stale = %q, want %q as before", got, rootX["catalog_stale"])
	}
	checkOffline(t, m, imgs)
}

func checkOffline(t *testing.T, m *mount, imgs map[string]image) {
	t.Helper()
	ls := run(t, "ls", m.dir)
	if !strings.Contains(ls, "cached.img") || !strings.Contains(ls, "uncached.img") {
		t.Fatalf("ls offline: %q", ls)
	}
	if got := sha256sum(t, m.path("cached.img")); got != imgs["cached.img"].sha256 {
		t.Fatal("cached image wrong offline")
	}
	start := time.Now()
	out, err := runErr("cat", m.path("uncached.img"))
	t.Logf("uncached read offline failed after %v (bound: --read-timeout, default 30s)", time.Since(start))
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("uncached read offline: err=%v %q", err, out)
	}
	if e := xattrs(t, m.path("uncached.img"))["error"]; !strings.Contains(e, "refused") {
		t.Fatalf("user.imgcache.error = %q, want connection refused", e)
	}
}

// TestFailoverToMirror: with two upstreams of the same images, stopping
// the first one leaves reads and listings to the second.
func TestFailoverToMirror(t *testing.T) {
	need(t, "sha256sum", "ls")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 2 << 20, "b.img": 2 << 20})
	first, second := startOrigin(t, root), startOrigin(t, root)
	m := startMount(t, first.url+","+second.url, "", "--catalog-ttl", "1s")
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img wrong")
	}
	if got, ok := xattrs(t, m.dir)["upstream_active"]; ok {
		t.Fatalf("upstream_active = %q before any failover", got)
	}
	if err := first.proc.stop(); err != nil {
		t.Fatal(err)
	}
	// catalog_refreshed has whole seconds: one that shows the second
	// after the stop or later is of a refresh that began after it.
	stopped := time.Now().Truncate(time.Second).Add(time.Second)
	if got := sha256sum(t, m.path("b.img")); got != imgs["b.img"].sha256 {
		t.Fatal("b.img wrong from the mirror")
	}
	if got := xattrs(t, m.dir)["upstream_active"]; got != second.url {
		t.Fatalf("root user.imgcache.upstream_active = %q, want the mirror %s", got, second.url)
	}
	if n := second.bytesServed(t)["b.img"]; n != 2<<20 {
		t.Fatalf("the mirror served %d bytes of b.img, want all %d", n, 2<<20)
	}
	// A catalog refresh after the stop, which must go to the mirror: one
	// that failed would leave catalog_refreshed where it was.
	var x map[string]string
	if !poll(20*time.Second, func() bool {
		x = xattrs(t, m.dir)
		at, err := time.Parse(time.RFC3339, x["catalog_refreshed"])
		return err == nil && !at.Before(stopped)
	}) {
		t.Fatalf("no catalog refresh succeeded within 20s of the first upstream's stop, with the mirror up: %v", x)
	}
	if _, ok := x["catalog_error"]; ok {
		t.Fatalf("catalog refresh failed with a mirror up: %v", x)
	}
	if ls := run(t, "ls", m.dir); !strings.Contains(ls, "b.img") {
		t.Fatalf("ls after failover: %q", ls)
	}
}

// TestFirstStartWithUpstreamDown: a first mount (no catalog yet) of an
// upstream that is down still mounts, empty, says why at the root, and
// lists the images once the upstream comes up.
func TestFirstStartWithUpstreamDown(t *testing.T) {
	need(t, "ls", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start := time.Now()
	m := startMount(t, "http://"+addr+"/", "", "--catalog-ttl", "2s")
	t.Logf("mounted with the upstream down in %v", time.Since(start))
	if ls := strings.TrimSpace(run(t, "ls", m.dir)); ls != "" {
		t.Fatalf("ls = %q with nothing ever listed", ls)
	}
	if e := xattrs(t, m.dir)["catalog_error"]; !strings.Contains(e, "refused") {
		t.Fatalf("catalog_error = %q", e)
	}
	start = time.Now()
	startOriginAt(t, root, addr)
	waitUntil(t, "the catalog to appear", func() bool { return strings.Contains(run(t, "ls", m.dir), "a.img") })
	t.Logf("catalog appeared %v after the upstream came up", time.Since(start))
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("wrong bytes")
	}
	if x := xattrs(t, m.dir); x["catalog_error"] != "" || x["catalog_stale"] != "" {
		t.Fatalf("after recovery the root still says %v", x)
	}
}

// startOriginAt serves root with imgcache serve on addr.
func startOriginAt(t *testing.T, root, addr string) *upstreamServer {
	t.Helper()
	log := filepath.Join(t.TempDir(), "access.log")
	p := start(t, "serving ", bin, "serve", "--listen", addr, "--access-log", log, root)
	return &upstreamServer{url: "http://" + addr + "/", accessLog: log, proc: p, parseLine: parseOriginLog}
}
