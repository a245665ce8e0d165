package failover

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// fake is an upstream that is up or down.
type fake struct {
	name string
	mu   sync.Mutex
	down bool
	hits int
}

func (u *fake) set(down bool) { u.mu.Lock(); u.down = down; u.mu.Unlock() }

func (u *fake) call() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hits++
	if u.down {
		return errors.New(u.name + " is down")
	}
	return nil
}

func (u *fake) List(ctx context.Context) ([]upstream.Entry, error) {
	if err := u.call(); err != nil {
		return nil, err
	}
	return []upstream.Entry{{Name: "from-" + u.name, Size: 1}}, nil
}

func (u *fake) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	if err := u.call(); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader(u.name)), nil
}

func (u *fake) URL(name string) string { return "http://" + u.name + "/" + name }

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
	a, b, c := &fake{name: "a"}, &fake{name: "b"}, &fake{name: "c"}
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
	hitsA := a.hits
	if got := fetch(t, f); got != "c" || a.hits != hitsA+1 {
		t.Fatalf("probe of a still down: %q (a asked %d times), want c after one try of a", got, a.hits-hitsA)
	}
	if got := fetch(t, f); got != "c" || a.hits != hitsA+1 {
		t.Fatalf("right after a failed probe: %q (a asked %d times), want c without asking a", got, a.hits-hitsA)
	}
	a.set(false)
	hitsA = a.hits
	if got := fetch(t, f); got != "c" || a.hits != hitsA {
		t.Fatalf("before ProbeAfter: %q (a asked %d times), want c without asking a", got, a.hits-hitsA)
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

// breaking is a body that fails after its first byte.
type breaking struct{ fake }

func (u *breaking) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader("x"), errReader{})), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestBrokenBodyFailsOver(t *testing.T) {
	a, b := &breaking{fake{name: "a"}}, &fake{name: "b"}
	f := New([]upstream.Upstream{a, b}, time.Minute, nil)
	if got := fetch(t, f); got != "x" {
		t.Fatalf("first fetch: %q", got)
	}
	if got := fetch(t, f); got != "b" {
		t.Fatalf("after a broken body: %q, want b", got)
	}
}
