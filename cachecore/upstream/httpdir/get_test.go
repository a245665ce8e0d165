package httpdir

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

func TestGetAsksWhetherAFileChanged(t *testing.T) {
	old := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	var version atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/gone.json" {
			http.NotFound(w, r)
			return
		}
		etag := `"v` + string(rune('0'+version.Load())) + `"`
		w.Header().Set("ETag", etag)
		lm := old
		if r.URL.Path == "/young.json" {
			lm = time.Now().UTC()
		}
		w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("body " + etag))
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{})
	ctx := context.Background()

	f, err := u.Get(ctx, "a.json", 100, nil)
	if err != nil || string(f.Data) != `body "v0"` || f.ETag != `"v0"` || !f.ModTime.Equal(old) || f.Young {
		t.Fatalf("Get: %+v, %v", f, err)
	}
	again, err := u.Get(ctx, "a.json", 100, f)
	if err != nil || again != f {
		t.Fatalf("Get of an unchanged file: %+v, %v; want the same *File", again, err)
	}
	version.Store(1)
	changed, err := u.Get(ctx, "a.json", 100, f)
	if err != nil || string(changed.Data) != `body "v1"` {
		t.Fatalf("Get of a changed file: %+v, %v", changed, err)
	}

	// A file modified within a second of the reply is asked for whole.
	y, err := u.Get(ctx, "young.json", 100, nil)
	if err != nil || !y.Young {
		t.Fatalf("young file: %+v, %v", y, err)
	}
	y2, err := u.Get(ctx, "young.json", 100, y)
	if err != nil || y2 == y || string(y2.Data) != `body "v1"` {
		t.Fatalf("Get after a young file: %+v, %v; want a new read", y2, err)
	}

	if _, err := u.Get(ctx, "a.json", 5, nil); err == nil || !strings.Contains(err.Error(), "a.json is larger than its cap of 5 bytes") {
		t.Fatalf("over the cap: %v", err)
	}
	if _, err := u.Get(ctx, "gone.json", 100, nil); !errors.Is(err, upstream.ErrNotFound) {
		t.Fatalf("404: %v", err)
	}
	if _, err := u.Get(ctx, "../x", 100, nil); !errors.Is(err, upstream.ErrUnsafeName) {
		t.Fatalf("unsafe name: %v", err)
	}
}
