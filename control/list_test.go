package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// manyBackend makes its n images ("img000000.img", ...) as they are
// listed, so that a listing is never held whole on its side either, and
// counts those it made.
type manyBackend struct {
	*fakeBackend
	n      int
	made   atomic.Int64
	walked chan struct{} // gets a value when a walk ends
}

func newManyBackend(n int) *manyBackend {
	return &manyBackend{fakeBackend: newFakeBackend(), n: n, walked: make(chan struct{}, 16)}
}

func manyName(i int) string { return fmt.Sprintf("img%06d.img", i) }

func (b *manyBackend) Images(prefix string) iter.Seq[Image] {
	return func(yield func(Image) bool) {
		defer func() { b.walked <- struct{}{} }()
		for i := range b.n {
			name := manyName(i)
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			b.made.Add(1)
			if !yield(Image{Name: name, Size: int64(i), State: "absent"}) {
				return
			}
		}
	}
}

func collect(t *testing.T, seq iter.Seq2[Image, error]) []string {
	t.Helper()
	var names []string
	for img, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, img.Name)
	}
	return names
}

// TestListStreamsWithPrefixAndLimit: GET /v1/images lists every image in
// order, or those with a prefix, or the first N; the reply is one JSON
// array (for curl and any JSON reader) that the client reads an image at
// a time.
func TestListStreamsWithPrefixAndLimit(t *testing.T) {
	const n = 20000
	b := newManyBackend(n)
	_, c, _ := serve(t, b)
	ctx := context.Background()

	all := collect(t, c.List(ctx, ListOptions{}))
	if len(all) != n {
		t.Fatalf("List: %d images, want %d", len(all), n)
	}
	for i, name := range all {
		if name != manyName(i) {
			t.Fatalf("List: image %d is %q, want %q", i, name, manyName(i))
		}
	}
	cases := []struct {
		o    ListOptions
		want []string
	}{
		{ListOptions{Prefix: "img0001"}, all[100:200]},
		{ListOptions{Prefix: "img0001", Limit: 3}, all[100:103]},
		{ListOptions{Limit: 7}, all[:7]},
		{ListOptions{Limit: n + 5}, all},
		{ListOptions{Prefix: "img019999.img"}, all[n-1:]},
		{ListOptions{Prefix: "nope"}, nil},
		{ListOptions{Prefix: "img 0&limit=1"}, nil}, // escaped, not a parameter
	}
	for _, tc := range cases {
		got := collect(t, c.List(ctx, tc.o))
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("List(%+v): %d images %.80q, want %d", tc.o, len(got), got, len(tc.want))
		}
	}
	if imgs, err := c.Images(ctx); err != nil || len(imgs) != n {
		t.Fatalf("Images: %v, %d images", err, len(imgs))
	}

	// The reply is a JSON array as any reader takes it, [] when empty.
	for path, want := range map[string]int{"/v1/images?limit=2": 2, "/v1/images?prefix=x": 0} {
		resp, err := c.request(ctx, "GET", path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var imgs []Image
		if err := json.Unmarshal(body, &imgs); err != nil || imgs == nil || len(imgs) != want {
			t.Errorf("GET %s: %q: %v", path, body, err)
		}
	}
	for _, bad := range []string{"-1", "x", "1.5"} {
		if _, err := c.request(ctx, "GET", "/v1/images?limit="+bad); !isStatus(err, http.StatusBadRequest) ||
			!strings.Contains(err.Error(), "limit") {
			t.Errorf("limit=%s: %v, want 400 naming the limit", bad, err)
		}
	}
}

// TestListStopsWhenTheClientDoes: a client that stops reading a listing
// and hangs up ends the walk on the daemon's side, long before its end.
func TestListStopsWhenTheClientDoes(t *testing.T) {
	const n = 2_000_000
	b := newManyBackend(n)
	_, c, _ := serve(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	got := 0
	for _, err := range c.List(ctx, ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if got++; got == 10 {
			break
		}
	}
	cancel()
	c.Close()
	select {
	case <-b.walked:
	case <-time.After(time.Minute):
		t.Fatalf("the walk did not end (%d of %d images made)", b.made.Load(), n)
	}
	if m := b.made.Load(); m >= n {
		t.Fatalf("the walk went on to the end: %d images made for a client that read 10", m)
	}
}
