package oci

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestFetchSplices: a blob range from a plain-HTTP registry can be
// spliced into a file (the kernel moves it from the socket), and the
// bytes are the range's; a reply that ends early is ErrShortBody after
// the bytes it did send, and a whole-blob reply (Range ignored) splices
// the range, not the blob's start.
func TestFetchSplices(t *testing.T) {
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	f := newFakeRegistry()
	layer := f.blob(data)
	f.tag("r", "t", f.manifest(f.artifact(titled(layer, "a.img"))))
	u, _ := newFakeUpstream(t, f, Options{})
	e := entry(t, listOK(t, u), "r/t/a.img")
	splice := func(off, n int64) ([]byte, int64, error) {
		t.Helper()
		r, err := u.Fetch(context.Background(), e, off, n)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		sp := upstream.SplicerOf(r)
		if sp == nil {
			t.Fatal("a plain-HTTP blob reply cannot be spliced")
		}
		file, err := os.Create(filepath.Join(t.TempDir(), "data"))
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		writes := 0
		k, err := sp.SpliceTo(file, off, n, func(do func() error) error { writes++; return do() })
		if k > 0 && writes == 0 {
			t.Error("SpliceTo wrote without calling write")
		}
		got := make([]byte, k)
		file.ReadAt(got, off)
		return got, k, err
	}

	const off, n = 1<<20 + 123, 1<<20 + 4567
	if got, k, err := splice(off, n); err != nil || k != n || string(got) != string(data[off:off+n]) {
		t.Errorf("range reply: %d bytes, %v; same bytes %v", k, err, string(got) == string(data[off:off+min(k, n)]))
	}

	f.hook = func(w http.ResponseWriter, r *http.Request) bool { // Range ignored
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
		return true
	}
	if got, k, err := splice(off, n); err != nil || k != n || string(got) != string(data[off:off+n]) {
		t.Errorf("whole-blob reply: %d bytes, %v; same bytes %v", k, err, string(got) == string(data[off:off+min(k, n)]))
	}

	const sent = 1000
	f.hook = func(w http.ResponseWriter, r *http.Request) bool { // ends early
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(off)+"-"+strconv.Itoa(off+n-1)+"/"+strconv.Itoa(len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[off : off+sent])
		return true
	}
	got, k, err := splice(off, n)
	if !errors.Is(err, upstream.ErrShortBody) || k != sent || string(got) != string(data[off:off+sent]) {
		t.Errorf("short reply: %d bytes, %v; want the %d bytes sent, then ErrShortBody", k, err, sent)
	}
}
