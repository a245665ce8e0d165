package integration

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// faultProxy is an in-process HTTP proxy in front of a real upstream that
// answers range requests for one path with a 500.
func faultProxy(t *testing.T, target, brokenPath string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == brokenPath && r.Method == http.MethodGet && r.Header.Get("Range") != "" {
			http.Error(w, "injected failure", http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/"
}

func TestUpstreamErrorGivesEIOAndIsRecorded(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"good.img": 2 << 20, "broken.img": 2 << 20})
	origin := startOrigin(t, root)
	m := startMount(t, faultProxy(t, origin.url, "/broken.img"), "")

	out, err := runErr("cat", m.path("broken.img"))
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("cat of an image the upstream fails: err=%v output=%q; want an I/O error", err, out)
	}
	x := xattrs(t, m.path("broken.img"))
	if !strings.Contains(x["error"], "500") {
		t.Fatalf("user.imgcache.error = %q, want the upstream's 500", x["error"])
	}
	if got := sha256sum(t, m.path("good.img")); got != imgs["good.img"].sha256 {
		t.Fatal("a healthy image reads wrong next to a failing one")
	}
	if _, ok := xattrs(t, m.path("good.img"))["error"]; ok {
		t.Fatal("healthy image has an error attribute")
	}
}

func TestUpstreamStoppedThenRemountOffline(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "ls")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"cached.img": 6<<20 + 1, "dir/also.img": 1 << 20, "uncached.img": 3 << 20})
	origin := startOrigin(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, origin.url, cacheDir)
	for _, name := range []string{"cached.img", "dir/also.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s: wrong bytes", name)
		}
	}
	run(t, "cat", m.path("cached.img"))

	if err := origin.proc.stop(); err != nil {
		t.Fatalf("origin exit: %v", err)
	}
	out, err := runErr("cat", m.path("uncached.img"))
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("read of an uncached image with the upstream gone: err=%v %q", err, out)
	}
	if e := xattrs(t, m.path("uncached.img"))["error"]; !strings.Contains(e, "refused") {
		t.Errorf("user.imgcache.error = %q, want it to say the connection was refused", e)
	}
	if got := sha256sum(t, m.path("cached.img")); got != imgs["cached.img"].sha256 {
		t.Fatal("cached image unreadable with the upstream gone")
	}
	m.unmount(t)

	// Remount over the same cache directory with the upstream still down.
	m = startMount(t, origin.url, cacheDir)
	ls := run(t, "ls", "-R", m.dir)
	for _, name := range []string{"cached.img", "also.img", "uncached.img"} {
		if !strings.Contains(ls, name) {
			t.Fatalf("after an offline remount ls lacks %s:\n%s", name, ls)
		}
	}
	for _, name := range []string{"cached.img", "dir/also.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s after offline remount: wrong bytes", name)
		}
	}
	if h := xattrs(t, m.path("cached.img"))["hits"]; h != "4" {
		t.Fatalf("hits after remount = %q, want 4 (3 opens before, 1 after)", h)
	}
}
