package httpdir

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// fixtureServer serves the listings captured from one real server
// (testdata/listings/<server>) for directory paths, and the files of the
// fixture tree for the rest, as that server would (with or without an
// ETag, HEAD or not).
type fixtureServer struct {
	*httptest.Server
	heads atomic.Int64 // HEAD requests answered
	gets  atomic.Int64 // GET requests of files answered
}

func newFixtureServer(t *testing.T, server string) *fixtureServer {
	t.Helper()
	treeDir := t.TempDir()
	buildTree(t, treeDir)
	root, err := os.OpenRoot(treeDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	listings := filepath.Join("testdata", "listings", server)
	fs := &fixtureServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasSuffix(p, "/") {
			serveListing(w, r, listings, p)
			return
		}
		f, err := root.Open(strings.TrimPrefix(p, "/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodHead {
			fs.heads.Add(1)
		} else {
			fs.gets.Add(1)
		}
		if server != "python" { // python's http.server sends no ETag
			w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.ModTime().Unix(), fi.Size()))
		}
		http.ServeContent(w, r, p, fi.ModTime(), f)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func serveListing(w http.ResponseWriter, r *http.Request, listings, dir string) {
	for _, ext := range []string{"html", "json"} {
		b, err := os.ReadFile(filepath.Join(listings, filepath.FromSlash(dir), "index."+ext))
		if err != nil {
			continue
		}
		if ext == "json" {
			w.Header().Set("Content-Type", "application/json")
		} else {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
		}
		w.Write(b)
		return
	}
	http.NotFound(w, r)
}

// wantTreeCatalog is the catalog of the fixture tree: every file but the
// hidden one, with the digests its SHA256SUMS files give.
func wantTreeCatalog() []upstream.Entry {
	var want []upstream.Entry
	add := func(name string, size int) {
		want = append(want, upstream.Entry{Name: name, Size: int64(size)})
	}
	for _, f := range treeFiles {
		if !strings.HasPrefix(f.name, ".") {
			add(f.name, f.size)
		}
	}
	for dir := range treeSums {
		add(strings.TrimPrefix(dir+"/"+SumsFile, "/"), len(treeSumsContent(dir)))
	}
	for dir, names := range treeSums {
		for _, rel := range names {
			full := strings.TrimPrefix(dir+"/"+rel, "/")
			i := slices.IndexFunc(want, func(e upstream.Entry) bool { return e.Name == full })
			want[i].Digest = "sha256:" + treeDigest(full)
		}
	}
	slices.SortFunc(want, func(a, b upstream.Entry) int { return strings.Compare(a.Name, b.Name) })
	return want
}

func TestListCapturedListings(t *testing.T) {
	for _, server := range []string{"nginx-html", "nginx-json", "apache-table", "apache-fancy", "apache-plain", "python"} {
		t.Run(server, func(t *testing.T) {
			srv := newFixtureServer(t, server)
			var logs bytes.Buffer
			u := newTestUpstream(t, srv.URL, Options{Logger: testLogger(&logs)})
			got, err := u.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := wantTreeCatalog()
			checkCatalog(t, got, want)
			heads := srv.heads.Load()
			if server == "nginx-json" {
				if heads != 0 {
					t.Errorf("%d HEAD requests for a JSON listing, which has exact sizes", heads)
				}
			} else if heads != int64(len(want)) {
				t.Errorf("%d HEAD requests, want one per file (%d)", heads, len(want))
			}
			for _, e := range got {
				if server != "python" && server != "nginx-json" && e.ETag == "" {
					t.Errorf("%s: no ETag from HEAD", e.Name)
				}
				if e.ModTime.IsZero() {
					t.Errorf("%s: no mtime", e.Name)
				}
			}
			if hides := server == "nginx-html" || server == "nginx-json"; !hides && !strings.Contains(logs.String(), `\".hidden.img\"`) {
				t.Errorf("the hidden file was not logged as refused; log:\n%s", logs.String())
			}
		})
	}
}

// checkCatalog compares names, sizes and digests.
func checkCatalog(t *testing.T, got, want []upstream.Entry) {
	t.Helper()
	strip := func(es []upstream.Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%q size=%d digest=%s", e.Name, e.Size, e.Digest))
		}
		return out
	}
	g, w := strip(got), strip(want)
	if !slices.Equal(g, w) {
		t.Errorf("catalog:\n  %s\nwant:\n  %s", strings.Join(g, "\n  "), strings.Join(w, "\n  "))
	}
}

func newTestUpstream(t *testing.T, rawURL string, opts Options) *Upstream {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(nil)
	}
	u, err := New(rawURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testLogger writes to w (if not nil) and to the test's output when -v.
func testLogger(w *bytes.Buffer) *slog.Logger {
	if w == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, nil))
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// pagesServer serves HTML (or JSON) pages by path; files get a size of
// 100 bytes on HEAD.
func pagesServer(t *testing.T, pages map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if body, ok := pages[r.URL.Path]; ok {
			if strings.HasPrefix(body, "[") || strings.HasPrefix(body, "{") {
				w.Header().Set("Content-Type", "application/json")
			} else {
				w.Header().Set("Content-Type", "text/html")
			}
			w.Write([]byte(body))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") || path.Base(r.URL.Path) == "index.json" {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Unix(1700000000, 0), bytes.NewReader(make([]byte, 100)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func listNames(t *testing.T, base string, opts Options) ([]string, string, error) {
	t.Helper()
	var logs bytes.Buffer
	opts.Logger = testLogger(&logs)
	u := newTestUpstream(t, base, opts)
	entries, err := u.List(context.Background())
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	return names, logs.String(), err
}

func TestListRefusesHostileLinks(t *testing.T) {
	deep := strings.Repeat("d/", 20)
	pages := map[string]string{
		"/base/": `<html><body>
<a href="../">../</a> <a href="/">Parent Directory</a> <a href="?C=N;O=D">Name</a> <a href="#top">top</a>
<a href="/etc/passwd">passwd</a> <a href="http://other/x.img">other</a> <a href="//other/y.img">other</a>
<a href="mailto:root@example.com">mail</a> <a href="javascript:alert(1)">js</a>
<a href="%2e%2e/escape.img">encoded dotdot</a> <a href="a%2fb.img">encoded slash</a>
<a href="nul%00.img">nul</a> <a href="ctl%0a.img">newline</a> <a href="tab&#9;.img">tab</a>
<a href="back%5cslash.img">backslash</a> <a href=".hidden">hidden</a> <a href="%zz.img">bad escape</a>
<a href="` + strings.Repeat("x", 300) + `.img">long</a>
<a href="/base/abs.img">absolute path inside</a> <a href="ok.img">ok</a> <a href='single.img'>quoted</a>
<a href=unquoted.img>unquoted</a> <A HREF="upper.img">upper</A> <!-- <a href="commented.img"> -->
<a title="x>y" href="after-gt.img">gt in attribute</a> size < 1M <a href="after-lt.img">lt in text</a>
<a href="` + deep + `">deep</a> <a href="loop/">loop</a>
</body></html>`,
		"/base/loop/":   `<a href="../">up</a><a href="../loop/">self via parent</a><a href="./">self</a><a href="in-loop.img">f</a>`,
		"/base/" + deep: `<a href="too-deep.img">x</a>`,
	}
	// A chain of nested directories: followed down to where names would
	// have more than 16 components.
	pages["/base/"] += `<a href="n/">n</a>`
	for dir := "/base/n/"; len(dir) < 100; dir += "n/" {
		pages[dir] = `<a href="n/">n/</a><a href="f.img">f</a>`
	}
	srv := pagesServer(t, pages)
	names, logs, err := listNames(t, srv.URL+"/base", Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"abs.img", "after-gt.img", "after-lt.img", "loop/in-loop.img"}
	for i := 1; i < upstream.MaxNameDepth; i++ {
		want = append(want, strings.Repeat("n/", i)+"f.img")
	}
	want = append(want, "ok.img", "single.img", "unquoted.img", "upper.img")
	if !slices.Equal(names, want) {
		t.Errorf("names %q\nwant %q", names, want)
	}
	for _, refused := range []string{"deeper than 16", `\"..\"`, "escaped slash", `nul\\x00.img`, `ctl\\n.img`, `tab\\t.img`, "backslash", `hidden component \".hidden\"`, "invalid URL escape", "longer than 255"} {
		if !strings.Contains(logs, refused) {
			t.Errorf("no refusal mentioning %s logged; log:\n%s", refused, logs)
		}
	}
	if strings.Contains(logs, "passwd") || strings.Contains(logs, "other") || strings.Contains(logs, "commented") {
		t.Errorf("navigation links were logged as refused names:\n%s", logs)
	}
	if !strings.Contains(logs, "too deep") {
		t.Errorf("the directory too deep to follow was not logged:\n%s", logs)
	}
}
