package httpdir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

func TestListPrefersOriginIndex(t *testing.T) {
	mtime := time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC)
	idx := Index{Version: IndexVersion, Images: []IndexImage{
		{Name: "ubuntu/jammy.img", Size: 42, SHA256: strings.Repeat("AB", 32), ModTime: mtime, ETag: `"1-2-3"`},
		{Name: "ubuntu/jammy.img", Size: 43}, // duplicate: the first wins
		{Name: "../escape.img", Size: 1},
		{Name: "/not/clean.img", Size: 1},
		{Name: "negative.img", Size: -1},
		{Name: "badsum.img", Size: 1, SHA256: "xyz"},
		{Name: "nosum.img", Size: 0},
	}}
	body, _ := json.Marshal(idx)
	var listings atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/images/"+IndexPath {
			w.Write(body)
			return
		}
		listings.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	names, logs, err := listNames(t, srv.URL+"/images", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ubuntu/jammy.img", "nosum.img"}; !slices.Equal(names, want) {
		t.Errorf("names %q, want %q", names, want)
	}
	if listings.Load() != 0 {
		t.Errorf("%d other requests; an origin index is the whole catalog", listings.Load())
	}
	for _, s := range []string{"escape.img", "not clean", "negative size", "malformed sha256"} {
		if !strings.Contains(logs, s) {
			t.Errorf("no refusal mentioning %q logged:\n%s", s, logs)
		}
	}
	u := newTestUpstream(t, srv.URL+"/images/", Options{})
	entries, _ := u.List(context.Background())
	e := entries[0]
	if e.Size != 42 || e.Digest != "sha256:"+strings.Repeat("ab", 32) || !e.ModTime.Equal(mtime) || e.ETag != `"1-2-3"` {
		t.Errorf("entry %+v", e)
	}
}

func TestListIndexFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"server error", 500, "", "500 Internal Server Error"},
		{"forbidden", 403, "", "403 Forbidden"},
		{"not json", 200, "<html>", "origin index"},
		{"other version", 200, `{"version":2,"images":[]}`, "version 2"},
		{"too many", 200, `{"version":1,"images":[{"name":"a","size":1},{"name":"b","size":1},{"name":"c","size":1}]}`, "cap of 2"},
		{"too large", 200, `{"version":1,"images":[` + strings.Repeat(" ", 2000) + `]}`, "cap of 1024 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, _, err := listNames(t, srv.URL, Options{MaxEntries: 2, MaxListingBytes: 1024})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), IndexPath) {
				t.Errorf("List error %v, want one naming %s and mentioning %q", err, IndexPath, tc.want)
			}
		})
	}
}

func TestListCaps(t *testing.T) {
	manyFiles := ""
	for i := range 5 {
		manyFiles += fmt.Sprintf(`<a href="f%d.img">f</a>`, i)
	}
	for _, tc := range []struct {
		name  string
		pages map[string]string
		opts  Options
		want  string
	}{
		{"listing bytes", map[string]string{"/": strings.Repeat("<p>", 400)}, Options{MaxListingBytes: 1000}, "directory listing is larger than its cap of 1000 bytes"},
		{"entries", map[string]string{"/": manyFiles}, Options{MaxEntries: 4}, "more than 4 files"},
		{"listings", map[string]string{"/": `<a href="a/">a</a><a href="b/">b</a>`, "/a/": "", "/b/": ""}, Options{MaxListings: 2}, "more than 2 directory listings"},
		{"bad json", map[string]string{"/": `[{"name":`}, Options{}, "JSON listing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := pagesServer(t, tc.pages)
			names, _, err := listNames(t, srv.URL, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("List = %q, %v; want an error mentioning %q", names, err, tc.want)
			}
		})
	}
}

func TestListSizesWithoutHEAD(t *testing.T) {
	files := map[string]int{"a.img": 10, "empty.img": 0}
	var heads, probes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch name := strings.TrimPrefix(r.URL.Path, "/"); {
		case name == IndexPath:
			http.NotFound(w, r)
		case name == "":
			w.Write([]byte(`<a href="a.img">a</a><a href="empty.img">e</a><a href="gone.img">g</a>`))
		case r.Method == http.MethodHead:
			heads.Add(1)
			w.WriteHeader(http.StatusMethodNotAllowed)
		case r.Header.Get("Range") != "bytes=0-0":
			t.Errorf("probe GET with Range %q", r.Header.Get("Range"))
		default:
			probes.Add(1)
			size, ok := files[name]
			switch {
			case !ok:
				http.NotFound(w, r)
			case size == 0:
				w.Header().Set("Content-Range", "bytes */0")
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			default:
				w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-0/%d", size))
				w.Header().Set("ETag", `"v1"`)
				w.WriteHeader(http.StatusPartialContent)
				w.Write([]byte{0})
			}
		}
	}))
	defer srv.Close()
	u := newTestUpstream(t, srv.URL, Options{})
	entries, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "a.img" || entries[0].Size != 10 || entries[0].ETag != `"v1"` ||
		entries[1].Name != "empty.img" || entries[1].Size != 0 {
		t.Errorf("entries %+v", entries)
	}
	if heads.Load() != 3 || probes.Load() != 3 {
		t.Errorf("%d HEADs and %d probes, want 3 each", heads.Load(), probes.Load())
	}
}

func TestListFailsOnHEADError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Write([]byte(`<a href="a.img">a</a><a href="b.img">b</a>`))
		case "/" + IndexPath:
			http.NotFound(w, r)
		case "/b.img":
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.Header().Set("Content-Length", "5")
		}
	}))
	defer srv.Close()
	_, _, err := listNames(t, srv.URL, Options{})
	if err == nil || !strings.Contains(err.Error(), "HEAD "+srv.URL+"/b.img: 502 Bad Gateway") {
		t.Errorf("List error %v; a file that cannot be sized must fail the List (a partial catalog drops images)", err)
	}
}

func TestSHA256SUMSNearestWins(t *testing.T) {
	d := func(c string) string { return strings.Repeat(c, 64) }
	srv := pagesServer(t, map[string]string{
		"/":               `<a href="SHA256SUMS">s</a><a href="top.img">t</a><a href="sub/">sub</a>`,
		"/SHA256SUMS":     d("a") + "  top.img\n" + d("b") + " *sub/x.img\n" + d("c") + "  ./sub/y.img\n" + d("d") + "  missing.img\n",
		"/sub/":           `<a href="SHA256SUMS">s</a><a href="x.img">x</a><a href="y.img">y</a>`,
		"/sub/SHA256SUMS": d("e") + "  x.img\n",
	})
	u := newTestUpstream(t, srv.URL, Options{})
	entries, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Name] = e.Digest
	}
	want := map[string]string{"top.img": "sha256:" + d("a"), "sub/x.img": "sha256:" + d("e"), "sub/y.img": "sha256:" + d("c")}
	for name, digest := range want {
		if got[name] != digest {
			t.Errorf("%s: digest %q, want %q", name, got[name], digest)
		}
	}
	if _, ok := got["SHA256SUMS"]; !ok {
		t.Error("SHA256SUMS itself is not listed")
	}
}

func TestCredentialsNeverShown(t *testing.T) {
	var auth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, _ := r.BasicAuth()
		auth.Store(user + ":" + pass)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	base := strings.Replace(srv.URL, "http://", "http://alice:s3cret@", 1) + "/dir"
	u := newTestUpstream(t, base, Options{})
	_, err := u.List(context.Background())
	if got := auth.Load(); got != "alice:s3cret" {
		t.Errorf("server saw basic auth %v", got)
	}
	srv.Close() // now every request fails in the transport
	_, err2 := u.Fetch(context.Background(), upstream.Entry{Name: "a b.img", Size: 10}, 0, 10)
	_, err3 := New("http://alice:s3cret@host:port:bad/", Options{})
	for _, s := range []string{fmt.Sprint(err), fmt.Sprint(err2), fmt.Sprint(err3), u.URL("a b.img")} {
		if strings.Contains(s, "alice") || strings.Contains(s, "s3cret") {
			t.Errorf("credentials shown: %s", s)
		}
	}
	if err2 == nil || !strings.HasPrefix(err2.Error(), "GET "+srv.URL+"/dir/a%20b.img bytes=0-9: ") {
		t.Errorf("transport error %q does not name the request", err2)
	}
	if got, want := u.URL("a b.img"), srv.URL+"/dir/a%20b.img"; got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, raw := range []string{"ftp://host/", "file:///srv", "http:///path", "http://host/dir?x=1", "http://host/dir#f", "://bad"} {
		if _, err := New(raw, Options{}); err == nil {
			t.Errorf("New(%q) succeeded", raw)
		}
	}
	u, err := New("https://host/a%20dir", Options{})
	if err != nil || u.URL("x/y z.img") != "https://host/a%20dir/x/y%20z.img" {
		t.Errorf("New: %v; URL %q", err, u.URL("x/y z.img"))
	}
	if !errors.Is((&statusError{code: 410}), upstream.ErrNotFound) {
		t.Error("410 is not ErrNotFound")
	}
}
