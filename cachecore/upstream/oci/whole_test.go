package oci

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestFetchReadWhole: a whole-blob reply to a Range GET (a pull-through
// registry fetching a cold blob) yields the whole blob when the caller
// asks before reading (upstream.WholeReader); a range reply stays the
// range.
func TestFetchReadWhole(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	f := newFakeRegistry()
	layer := f.blob(data)
	f.tag("r", "t", f.manifest(f.artifact(titled(layer, "a.img"))))
	u, _ := newFakeUpstream(t, f, Options{})
	e := entry(t, listOK(t, u), "r/t/a.img")
	read := func() (bool, string, error) {
		r, err := u.Fetch(context.Background(), e, 5, 10)
		if err != nil {
			return false, "", err
		}
		defer r.Close()
		whole := upstream.ReadWhole(r)
		b, err := io.ReadAll(r)
		return whole, string(b), err
	}
	if whole, got, err := read(); whole || got != "56789abcde" || err != nil {
		t.Errorf("range reply: ReadWhole %v, %q, %v", whole, got, err)
	}
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Write(data)
		return true
	}
	if whole, got, err := read(); !whole || got != string(data) || err != nil {
		t.Errorf("whole-blob reply: ReadWhole %v, %q, %v; want the whole blob", whole, got, err)
	}
}
