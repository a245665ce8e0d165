package upstreamtest

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestContract: the fake serves ranges as an upstream must, says
// ErrNotFound for what it does not list, and goes down and up.
func TestContract(t *testing.T) {
	ctx := context.Background()
	u := New("fake://up/")
	u.Add("a.img", []byte("0123456789"), true)
	u.AddEntry(upstream.Entry{Name: "big.img", Size: 1 << 40})
	es, err := u.List(ctx)
	if err != nil || len(es) != 2 || es[0].Name != "a.img" || es[0].Digest != Digest([]byte("0123456789")) ||
		es[1].Size != 1<<40 {
		t.Fatalf("list: %+v %v", es, err)
	}
	read := func(name string, off, n int64) (string, error) {
		rc, err := u.Fetch(ctx, upstream.Entry{Name: name}, off, n)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	if got, err := read("a.img", 3, 4); got != "3456" || err != nil {
		t.Errorf("range 3+4: %q %v", got, err)
	}
	if _, err := read("a.img", 8, 4); err == nil {
		t.Error("a range past the end was served")
	}
	if got, _ := read("big.img", 1<<39+1, 2); got != "\x01\x02" {
		t.Errorf("an entry's bytes at an offset: %q", got)
	}
	if _, err := read("none.img", 0, 1); !errors.Is(err, upstream.ErrNotFound) {
		t.Errorf("fetch of an unlisted image: %v", err)
	}
	down := errors.New("down")
	u.SetDown(down)
	if _, err := u.List(ctx); err != down {
		t.Errorf("list while down: %v", err)
	}
	u.SetDown(nil)
	if u.Fetched() != 6 || u.Requests() != 4 || u.Calls() != 6 {
		t.Errorf("counts: %d bytes, %d requests, %d calls", u.Fetched(), u.Requests(), u.Calls())
	}
}
