package failover

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// fake is the shared fake upstream (upstreamtest) at http://name/,
// listing from-name and serving x as the name's first letter.
type fake struct {
	*upstreamtest.Upstream
	name string
}

func newFake(name string) *fake {
	u := &fake{Upstream: upstreamtest.New("http://" + name + "/"), name: name}
	u.Add("from-"+name, []byte{name[0]}, false)
	u.Add("x", []byte{name[0]}, false)
	return u
}

// set takes the upstream down (every call fails) or up.
func (u *fake) set(down bool) {
	var err error
	if down {
		err = errors.New(u.name + " is down")
	}
	u.SetDown(err)
}

func fetch(t *testing.T, f *Upstream) string {
	t.Helper()
	rc, err := f.Fetch(context.Background(), upstream.Entry{Name: "x", Size: 1}, 0, 1)
	if err != nil {
		return "error: " + err.Error()
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func TestOrderedFailoverAndRecovery(t *testing.T) {
	a, b, c := newFake("a"), newFake("b"), newFake("c")
	f := New([]upstream.Upstream{a, b, c}, time.Minute, nil)
	now := time.Unix(1000, 0)
	f.now = func() time.Time { return now }

	if got := fetch(t, f); got != "a" {
		t.Fatalf("all up: %q", got)
	}
	a.set(true)
	if got := fetch(t, f); got != "b" {
		t.Fatalf("a down: %q, want b", got)
	}
	b.set(true)
	if got := fetch(t, f); got != "c" {
		t.Fatalf("a, b down: %q, want c", got)
	}
	if es, err := f.List(context.Background()); err != nil || es[0].Name != "from-c" {
		t.Fatalf("list: %v %v", es, err)
	}
	now = now.Add(time.Minute) // a probe of a, which fails: not asked again for ProbeAfter
	hitsA := a.Calls()
	if got := fetch(t, f); got != "c" || a.Calls() != hitsA+1 {
		t.Fatalf("probe of a still down: %q (a asked %d times), want c after one try of a", got, a.Calls()-hitsA)
	}
	if got := fetch(t, f); got != "c" || a.Calls() != hitsA+1 {
		t.Fatalf("right after a failed probe: %q (a asked %d times), want c without asking a", got, a.Calls()-hitsA)
	}
	a.set(false)
	hitsA = a.Calls()
	if got := fetch(t, f); got != "c" || a.Calls() != hitsA {
		t.Fatalf("before ProbeAfter: %q (a asked %d times), want c without asking a", got, a.Calls()-hitsA)
	}
	now = now.Add(time.Minute)
	if got := fetch(t, f); got != "a" {
		t.Fatalf("after ProbeAfter with a back: %q, want a", got)
	}
	if f.Active() != "http://a/" || f.URL("x") != "http://a/x" {
		t.Fatalf("active %s, URL %s", f.Active(), f.URL("x"))
	}
	a.set(true)
	c.set(true)
	got := fetch(t, f)
	for _, name := range []string{"a is down", "b is down", "c is down"} {
		if !strings.Contains(got, name) {
			t.Fatalf("all down: %q lacks %q", got, name)
		}
	}
}

// breaking is an upstream whose bodies fail after their first byte.
type breaking struct{ *fake }

func (u *breaking) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader("x"), errReader{})), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestBrokenBodyFailsOver(t *testing.T) {
	a, b := &breaking{newFake("a")}, newFake("b")
	f := New([]upstream.Upstream{a, b}, time.Minute, nil)
	if got := fetch(t, f); got != "x" {
		t.Fatalf("first fetch: %q", got)
	}
	if got := fetch(t, f); got != "b" {
		t.Fatalf("after a broken body: %q, want b", got)
	}
}

// A whole-image reply keeps its ReadWhole through the failover's body.
func TestFetchPassesReadWhole(t *testing.T) {
	a := upstreamtest.New("http://a/")
	a.Add("x.img", []byte("0123456789"), false)
	a.SetIgnoreRange(true)
	f := New([]upstream.Upstream{a}, 0, nil)
	r, err := f.Fetch(context.Background(), upstream.Entry{Name: "x.img", Size: 10}, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !upstream.ReadWhole(r) {
		t.Fatal("ReadWhole of a whole reply through failover = false")
	}
	if b, err := io.ReadAll(r); string(b) != "0123456789" || err != nil {
		t.Fatalf("read %q, %v; want the whole image", b, err)
	}
}
