package httpdir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// listedDir is a directory served like nginx's HTML autoindex: one line
// per file with its date (to the minute) and size; files answer HEAD and
// ranges with an ETag of their version. It counts the HEADs of each file.
type listedDir struct {
	mu    sync.Mutex // protects the following
	files map[string]listedFile
	heads map[string]int
	dates bool // rows show dates and sizes (nginx), else names only (python)
}

type listedFile struct {
	body    []byte
	version int
	mtime   time.Time
}

func newListedDir(t *testing.T, dates bool, names ...string) (*listedDir, *httptest.Server) {
	d := &listedDir{files: map[string]listedFile{}, heads: map[string]int{}, dates: dates}
	for _, n := range names {
		d.put(n, []byte("version 1 of "+n), time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC))
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return d, srv
}

func (d *listedDir) put(name string, body []byte, mtime time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.files[name] = listedFile{body: body, version: d.files[name].version + 1, mtime: mtime}
}

func (d *listedDir) headCounts() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.heads
	d.heads = map[string]int{}
	return c
}

func (d *listedDir) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	name := strings.TrimPrefix(r.URL.Path, "/")
	if r.Method == http.MethodHead {
		d.heads[name]++
	}
	if name == "" {
		var b strings.Builder
		b.WriteString("<html><body><pre><a href=\"../\">../</a>\n")
		for _, n := range slices.Sorted(func(yield func(string) bool) {
			for n := range d.files {
				if !yield(n) {
					return
				}
			}
		}) {
			f := d.files[n]
			fmt.Fprintf(&b, "<a href=%q>%s</a>", n, n)
			if d.dates {
				fmt.Fprintf(&b, "    %s %20d", f.mtime.Format("02-Jan-2006 15:04"), len(f.body))
			}
			b.WriteString("\n")
		}
		b.WriteString("</pre></body></html>\n")
		d.mu.Unlock()
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, b.String())
		return
	}
	f, ok := d.files[name]
	d.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"v%d"`, f.version))
	http.ServeContent(w, r, name, f.mtime, bytes.NewReader(f.body))
}

func listOK(t *testing.T, u *Upstream) []upstream.Entry {
	t.Helper()
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func etags(es []upstream.Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Name+"="+e.ETag)
	}
	return strings.Join(s, " ")
}

// TestListAsksAgainOnlyAboutChangedFiles: a refresh of an HTML listing
// sends no HEAD for files it knows, unless their row changed or a range
// reply showed a new version.
func TestListAsksAgainOnlyAboutChangedFiles(t *testing.T) {
	d, srv := newListedDir(t, true, "a.img", "b.img", "c.img")
	u := newTestUpstream(t, srv.URL, Options{})
	es := listOK(t, u)
	if h := d.headCounts(); len(h) != 3 {
		t.Fatalf("first List: HEADs %v, want one per file", h)
	}
	if again := listOK(t, u); etags(again) != etags(es) {
		t.Fatalf("second List: %s, want %s", etags(again), etags(es))
	}
	if h := d.headCounts(); len(h) != 0 {
		t.Fatalf("second List: HEADs %v, want none", h)
	}

	// b.img replaced with a new date: its row changes, the crawl asks.
	d.put("b.img", []byte("version 2 of b.img, longer"), time.Date(2024, 1, 2, 3, 5, 0, 0, time.UTC))
	if got := etags(listOK(t, u)); got != `a.img="v1" b.img="v2" c.img="v1"` {
		t.Fatalf("after b.img changed: %s", got)
	}
	if h := d.headCounts(); len(h) != 1 || h["b.img"] != 1 {
		t.Fatalf("after b.img changed: HEADs %v, want b.img's only", h)
	}

	// c.img replaced within the same minute, same size: the row is the
	// same, so only a range reply can tell; then the crawl asks.
	d.put("c.img", []byte("VERSION 1 OF c.img"), time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC))
	if got := etags(listOK(t, u)); !strings.Contains(got, `c.img="v1"`) {
		t.Fatalf("c.img's row did not change, yet the crawl asked: %s", got)
	}
	var c upstream.Entry
	for _, e := range es {
		if e.Name == "c.img" {
			c = e
		}
	}
	if _, err := u.Fetch(context.Background(), c, 0, 4); !errors.Is(err, upstream.ErrChanged) {
		t.Fatalf("Fetch of the old version of c.img: %v, want ErrChanged", err)
	}
	if got := etags(listOK(t, u)); !strings.Contains(got, `c.img="v2"`) {
		t.Fatalf("after a range reply showed c.img changed: %s", got)
	}
	if h := d.headCounts(); len(h) != 1 || h["c.img"] != 1 {
		t.Fatalf("after c.img changed: HEADs %v, want c.img's only", h)
	}
}

// TestRememberSparesTheFirstCrawl: entries the cache had in its index
// are taken as current by the first crawl after a start (no HEAD); a new
// file is still asked about.
func TestRememberSparesTheFirstCrawl(t *testing.T) {
	d, srv := newListedDir(t, false, "a.img", "b.img")
	first := newTestUpstream(t, srv.URL, Options{})
	es := listOK(t, first)
	d.headCounts()
	for i := range es {
		es[i].Digest = "sha256:" + strings.Repeat("0", 64) // not the listing's to keep
	}

	d.put("new.img", []byte("new"), time.Date(2024, 1, 2, 3, 4, 0, 0, time.UTC))
	restarted := newTestUpstream(t, srv.URL, Options{})
	restarted.Remember(upstream.KnownList(es))
	got := listOK(t, restarted)
	if h := d.headCounts(); len(h) != 1 || h["new.img"] != 1 {
		t.Fatalf("first crawl after a restart: HEADs %v, want new.img's only", h)
	}
	for _, e := range got {
		if e.Digest != "" {
			t.Errorf("%s: digest %q from the remembered entry", e.Name, e.Digest)
		}
	}
	if etags(got) != etags(es)+` new.img="v1"` {
		t.Fatalf("entries %s, want %s and new.img", etags(got), etags(es))
	}
	// Rows of names only (python3 -m http.server) never change: known
	// files are not asked about again.
	listOK(t, restarted)
	if h := d.headCounts(); len(h) != 0 {
		t.Fatalf("second crawl: HEADs %v, want none", h)
	}
}

// TestForgetDuringCrawl: a file forgotten while a crawl runs is not
// remembered by that crawl, which may have taken its old entry.
func TestForgetDuringCrawl(t *testing.T) {
	var k known
	f := &crawled{entries: []upstream.Entry{{Name: "a.img", Size: 1, ETag: `"v1"`}}, meta: []fileMeta{{sized: true, row: "row"}}}
	k.replace(f, k.begin())
	since := k.begin()
	if _, ok := k.lookup("a.img", "row"); !ok {
		t.Fatal("a.img not remembered")
	}
	k.forget("a.img")
	k.replace(f, since)
	if _, ok := k.lookup("a.img", "row"); ok {
		t.Fatal("a.img remembered by a crawl that began before it was forgotten")
	}
	k.replace(f, k.begin())
	if _, ok := k.lookup("a.img", "row"); !ok {
		t.Fatal("a.img not remembered by the next crawl")
	}
}
