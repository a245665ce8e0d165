package httpdir

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A file linked twice, or linked from above as well as from its own
// directory's listing, is one entry, asked about once; the first link's
// row is the one remembered.
func TestCrawlCountsALinkedNameOnce(t *testing.T) {
	listings := map[string]string{
		"/":     "<a href=\"a.img\">a.img</a> first\n<a href=\"a.img\">a.img</a> second\n<a href=\"sub/\">sub/</a>\n<a href=\"sub/b.img\">sub/b.img</a>\n",
		"/sub/": "<a href=\"b.img\">b.img</a>\n<a href=\"SHA256SUMS\">SHA256SUMS</a>\n",
	}
	files := map[string]string{
		"/a.img":          "aaaaa",
		"/sub/b.img":      "bbbbbbb",
		"/sub/SHA256SUMS": strings.Repeat("ab", 32) + "  b.img\n",
	}
	var mu sync.Mutex
	heads := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l, ok := listings[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(l))
			return
		}
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodHead {
			mu.Lock()
			heads[r.URL.Path]++
			mu.Unlock()
		}
		http.ServeContent(w, r, r.URL.Path, time.Unix(1e9, 0), strings.NewReader(body))
	}))
	defer srv.Close()
	u, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := listOK(t, u)
	var names []string
	for _, e := range got {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != "a.img sub/SHA256SUMS sub/b.img" {
		t.Fatalf("entries %v", names)
	}
	if got[0].Size != 5 || got[2].Size != 7 || got[2].Digest != "sha256:"+strings.Repeat("ab", 32) {
		t.Fatalf("entries %+v", got)
	}
	for p, n := range heads {
		if n != 1 {
			t.Errorf("%d HEADs of %s, want 1", n, p)
		}
	}
	if f := u.known.m["a.img"]; !strings.Contains(f.row, "first") {
		t.Errorf("a.img remembered with the row %q, want the first link's", f.row)
	}
}
