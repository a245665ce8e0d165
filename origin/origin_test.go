package origin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testFiles are the images of the test tree, by name; their content is
// made from their name and size.
var testFiles = map[string]int{
	"a.img":                  1000,
	"sub/b.img":              300,
	"sub/deeper/c.qcow2":     50,
	`odd <&> 'name' #1%.img`: 20,
	"ünï.img":                7,
	"empty.img":              0,
}

func fileContent(name string, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*13 + len(name))
	}
	return b
}

// newTree makes the test tree: testFiles, plus what must never be
// served: dotfiles, and symbolic links out of the tree.
func newTree(t *testing.T) string {
	t.Helper()
	top := t.TempDir()
	dir := filepath.Join(top, "images")
	write := func(name string, data []byte) {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, size := range testFiles {
		write(name, fileContent(name, size))
	}
	write(".hidden.img", []byte("hidden"))
	write(".imgcache/secret", []byte("hidden"))
	write("sub/.git/config", []byte("hidden"))
	write("../outside.img", []byte("outside"))
	for link, target := range map[string]string{
		"link.img":           "a.img",             // inside: served
		"sub/escape.img":     "../../outside.img", // out of the tree
		"abs.img":            filepath.Join(dir, "a.img"),
		"sub/linkdir":        "deeper", // a directory: neither listed nor indexed
		"sub/deeper/loop":    "..",
		"sub/deeper/to-root": "../../",
	} {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newTestServer(t *testing.T, dir string, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() {
		srv.Close()
		s.Close()
	})
	return s, srv
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	return do(t, "GET", url, hdr...)
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestServeRanges(t *testing.T) {
	_, srv := newTestServer(t, newTree(t), Options{})
	a := fileContent("a.img", 1000)

	resp, body := get(t, srv.URL+"/a.img", "Range", "bytes=10-19")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 10-19/1000" || !bytes.Equal(body, a[10:20]) {
		t.Errorf("range: %s %q %v", resp.Status, resp.Header.Get("Content-Range"), body)
	}
	if !strings.HasPrefix(etag, `"`) || resp.Header.Get("Last-Modified") == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("validators: ETag %q, Last-Modified %q", etag, resp.Header.Get("Last-Modified"))
	}
	lm := resp.Header.Get("Last-Modified")

	for _, tc := range []struct {
		name   string
		hdr    []string
		status int
		body   []byte
	}{
		{"whole", nil, 200, a},
		{"suffix", []string{"Range", "bytes=-5"}, 206, a[995:]},
		{"open end", []string{"Range", "bytes=990-"}, 206, a[990:]},
		{"past the end", []string{"Range", "bytes=2000-"}, 416, nil},
		{"If-Range matches", []string{"Range", "bytes=0-1", "If-Range", etag}, 206, a[:2]},
		{"If-Range differs", []string{"Range", "bytes=0-1", "If-Range", `"other"`}, 200, a},
		{"If-Range date", []string{"Range", "bytes=0-1", "If-Range", lm}, 206, a[:2]},
		{"If-None-Match", []string{"If-None-Match", etag}, 304, nil},
		{"If-Modified-Since", []string{"If-Modified-Since", lm}, 304, nil},
	} {
		resp, body := get(t, srv.URL+"/a.img", tc.hdr...)
		if resp.StatusCode != tc.status || tc.body != nil && !bytes.Equal(body, tc.body) {
			t.Errorf("%s: %s, %d bytes", tc.name, resp.Status, len(body))
		}
	}

	resp, body = do(t, "HEAD", srv.URL+"/a.img")
	if resp.StatusCode != 200 || resp.ContentLength != 1000 || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Errorf("HEAD: %s, length %d", resp.Status, resp.ContentLength)
	}
	resp, body = get(t, srv.URL+"/link.img", "Range", "bytes=0-9")
	if resp.StatusCode != 206 || !bytes.Equal(body, a[:10]) {
		t.Errorf("symlink inside the tree: %s", resp.Status)
	}
	resp, body = get(t, srv.URL+"/%C3%BCn%C3%AF.img")
	if resp.StatusCode != 200 || !bytes.Equal(body, fileContent("ünï.img", 7)) {
		t.Errorf("unicode name: %s", resp.Status)
	}
}

func TestETagChangesWithFile(t *testing.T) {
	dir := newTree(t)
	_, srv := newTestServer(t, dir, Options{})
	r1, _ := do(t, "HEAD", srv.URL+"/a.img")
	p := filepath.Join(dir, "a.img")
	// Same size, new mtime.
	if err := os.Chtimes(p, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r2, _ := do(t, "HEAD", srv.URL+"/a.img")
	// Same size and mtime, replaced by rename: a new inode.
	fi, _ := os.Stat(p)
	tmp := filepath.Join(dir, "tmp")
	os.WriteFile(tmp, fileContent("x", 1000), 0o644)
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	r3, _ := do(t, "HEAD", srv.URL+"/a.img")
	e1, e2, e3 := r1.Header.Get("ETag"), r2.Header.Get("ETag"), r3.Header.Get("ETag")
	if e1 == e2 || e2 == e3 || e1 == e3 {
		t.Errorf("ETags %s %s %s; each version needs its own", e1, e2, e3)
	}
}

func TestListing(t *testing.T) {
	_, srv := newTestServer(t, newTree(t), Options{})
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s", resp.Status)
	}
	page := string(body)
	want := []string{
		`<a href="a.img">a.img</a> `,
		`<a href="empty.img">empty.img</a> `,
		`<a href="link.img">link.img</a> `,
		`<a href="odd%20%3C&amp;%3E%20%27name%27%20%231%25.img">odd &lt;&amp;&gt; &#39;name&#39; #1%.img</a> `,
		`<a href="sub/">sub/</a> `,
		`<a href="%C3%BCn%C3%AF.img">ünï.img</a> `,
	}
	last := -1
	for _, w := range want {
		i := strings.Index(page, w)
		if i < 0 || i < last {
			t.Errorf("listing lacks %s (or not sorted):\n%s", w, page)
		}
		last = i
	}
	if !strings.Contains(page, `a.img</a> `) || !strings.Contains(page, " 1000\n") {
		t.Errorf("listing lacks the exact size:\n%s", page)
	}
	for _, bad := range []string{"hidden", ".imgcache", "abs.img", "../"} {
		if strings.Contains(page, bad) {
			t.Errorf("root listing shows %q:\n%s", bad, page)
		}
	}
	_, body = get(t, srv.URL+"/sub/")
	sub := string(body)
	for _, w := range []string{`<a href="../">../</a>`, `<a href="b.img">b.img</a> 2`, `<a href="deeper/">deeper/</a>`} {
		if !strings.Contains(sub, w) {
			t.Errorf("sub listing lacks %s:\n%s", w, sub)
		}
	}
	if strings.Contains(sub, "escape.img") || strings.Contains(sub, ".git") || strings.Contains(sub, "linkdir") {
		t.Errorf("sub listing shows what it must not:\n%s", sub)
	}
	resp, _ = get(t, srv.URL+"/sub")
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/sub/" {
		t.Errorf("GET /sub: %s to %q, want a redirect to /sub/", resp.Status, resp.Header.Get("Location"))
	}
}

func TestRefusesHostilePaths(t *testing.T) {
	s, err := New(newTree(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{
		"/../outside.img", "/sub/../a.img", "/./a.img", "//a.img", "/sub//b.img",
		"/.hidden.img", "/.imgcache/secret", "/.imgcache/", "/sub/.git/config",
		"/a.img\x00", "/a\\..\\a.img", "/a.img/", "/sub/escape.img", "/abs.img",
		"/sub/deeper/loop/../a.img", "/nonexistent.img", "/dev/null", "a.img",
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path = p // beyond what a client would send
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 404 {
			t.Errorf("GET %q: %d, want 404", p, rec.Code)
		}
	}
	_, srv := newTestServer(t, newTree(t), Options{})
	for _, p := range []string{"/%2e%2e/outside.img", "/sub/%2e%2e/a.img", "/a.img%00", "/%2Ehidden.img", "/sub%2Fb.img", "/a%5C..%5Ca.img"} {
		if resp, _ := get(t, srv.URL+p); resp.StatusCode != 404 && resp.StatusCode != 400 {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	if resp, _ := do(t, "POST", srv.URL+"/a.img"); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s", resp.Status)
	}
}

func TestAccessLog(t *testing.T) {
	var log syncBuffer
	_, srv := newTestServer(t, newTree(t), Options{AccessLog: &log})
	get(t, srv.URL+"/a.img", "Range", "bytes=10-19")
	get(t, srv.URL+"/a.img")
	do(t, "HEAD", srv.URL+"/a.img")
	get(t, srv.URL+"/odd%20%3C&%3E%20%27name%27%20%231%25.img")
	get(t, srv.URL+"/missing.img")
	get(t, srv.URL+"/a.img", "Range", "bytes=0-1,5-6") // multipart
	var recs []AccessRecord
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	for sc.Scan() {
		var r AccessRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	want := []AccessRecord{
		{Method: "GET", Path: "/a.img", Range: "bytes=10-19", Status: 206, Bytes: 10},
		{Method: "GET", Path: "/a.img", Status: 200, Bytes: 1000},
		{Method: "HEAD", Path: "/a.img", Status: 200, Bytes: 0},
		{Method: "GET", Path: `/odd <&> 'name' #1%.img`, Status: 200, Bytes: 20},
		{Method: "GET", Path: "/missing.img", Status: 404, Bytes: int64(len("404 page not found\n"))},
		{Method: "GET", Path: "/a.img", Range: "bytes=0-1,5-6", Status: 206},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d access log lines, want %d:\n%s", len(recs), len(want), log.String())
	}
	for i, w := range want {
		g := recs[i]
		if g.Method != w.Method || g.Path != w.Path || g.Range != w.Range || g.Status != w.Status ||
			(w.Bytes != 0 || w.Method == "HEAD") && g.Bytes != w.Bytes || g.Time.IsZero() || g.Remote == "" {
			t.Errorf("line %d: %+v, want %+v", i, g, w)
		}
	}
	if recs[5].Bytes <= 4 { // parts and their headers
		t.Errorf("multipart reply counted %d bytes", recs[5].Bytes)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
