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

// TestEntryBytes: an entry listed as given serves its Content, or the
// bytes given with it; the optional interfaces answer as set.
func TestEntryBytes(t *testing.T) {
	ctx := context.Background()
	u := New("fake://up/")
	doc := []byte(`{"a":1}`)
	blob := []byte("blob bytes")
	u.AddEntry(upstream.Entry{Name: "index.json", Size: int64(len(doc)), Digest: Digest(doc), Content: doc})
	u.AddEntryData(upstream.Entry{Name: "x/blob", Size: int64(len(blob)), Digest: Digest(blob), ByDigest: true}, blob)
	for name, want := range map[string]string{"index.json": `"a":1`, "x/blob": "bytes"} {
		rc, err := u.Fetch(ctx, upstream.Entry{Name: name}, int64(len(want)/2), int64(len(want)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if full := map[string][]byte{"index.json": doc, "x/blob": blob}[name]; string(got) != string(full[len(want)/2:len(want)/2+len(want)]) {
			t.Errorf("%s: served %q", name, got)
		}
	}
	if u.RequestsFor("x/blob") != 1 || u.RequestsFor("none") != 0 {
		t.Errorf("requests by name: %d %d", u.RequestsFor("x/blob"), u.RequestsFor("none"))
	}
	u.Remember(upstream.KnownList{{Name: "a"}})
	u.SetRetains(true)
	u.SetWarnings([]string{"w"})
	if r := u.Remembered(); len(r) != 1 || r[0][0].Name != "a" || !u.RetainsRemoved() || u.Warnings()[0] != "w" {
		t.Errorf("remembered %v, retains %v, warnings %v", r, u.RetainsRemoved(), u.Warnings())
	}
}
