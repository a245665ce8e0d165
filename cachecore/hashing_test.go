package cachecore

import (
	"context"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// readChunk reads chunk i of img through h.
func readChunk(t *testing.T, h *Handle, i int) {
	t.Helper()
	if _, err := h.Read(context.Background(), int64(i)*testChunk, testChunk); err != nil {
		t.Fatal(err)
	}
}

// The hash follows the chunks as they land: before the last chunk of a
// sequential read arrives, every chunk before it is hashed, and the whole
// image is hashed once.
func TestHashFollowsSequentialRead(t *testing.T) {
	up := newFake()
	const n = 8
	up.Add("x.img", randomBytes(n*testChunk, 40), true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i := range n - 1 {
		readChunk(t, h, i)
	}
	waitFor(t, func() bool { return c.Stats().BytesHashed.Load() == (n-1)*testChunk })
	if s := img.Info().State; s != StatePartial {
		t.Fatalf("state %s before the last chunk", s)
	}
	readChunk(t, h, n-1)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if got := c.Stats().BytesHashed.Load(); got != n*testChunk {
		t.Fatalf("%d bytes hashed for an image of %d", got, n*testChunk)
	}
}

// Chunks that land out of order are hashed when the prefix reaches them,
// once each.
func TestHashTakesOutOfOrderChunksOnce(t *testing.T) {
	up := newFake()
	const n = 6
	up.Add("x.img", randomBytes(n*testChunk-100, 41), false)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, i := range []int{3, 5, 0, 1, 4} {
		readChunk(t, h, i)
	}
	waitFor(t, func() bool { return c.Stats().BytesHashed.Load() == 2*testChunk })
	readChunk(t, h, 2)
	waitFor(t, func() bool {
		s, _ := c.idx.Sums(img.id)
		return len(s) == n*32
	})
	if got, want := c.Stats().BytesHashed.Load(), uint64(img.Size()); got != want {
		t.Fatalf("%d bytes hashed for an image of %d", got, want)
	}
	if s := img.Info().State; s != StateComplete {
		t.Fatalf("state %s", s)
	}
}

// Another program's write to the data file while the image is hashed, to
// a part already hashed, is not taken for the fetched bytes: the hash
// starts over from the file as it is, and finds it wrong.
func TestHashSeesForeignWriteDuringFetch(t *testing.T) {
	up := newFake()
	const n = 4
	up.Add("x.img", randomBytes(n*testChunk, 42), true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	readChunk(t, h, 0)
	readChunk(t, h, 1)
	waitFor(t, func() bool { return c.Stats().BytesHashed.Load() == 2*testChunk })
	damage(t, dataPath(c, img), 10) // chunk 0, hashed already
	readChunk(t, h, 2)
	readChunk(t, h, 3)
	waitFor(t, func() bool { s := img.Info().State; return s != StatePartial && s != StateAbsent })
	if s := img.Info().State; s != StateInvalid {
		t.Fatalf("an image changed on disk while it was hashed is %s, want invalid", s)
	}
}

// An empty image with a digest is verified by its digest (the sha256 of
// nothing), or invalid if it names other bytes; without one it is
// complete.
func TestEmptyImageState(t *testing.T) {
	up := newFake()
	up.Add("empty.img", nil, true)
	up.Add("plain.img", nil, false)
	up.AddEntry(upstream.Entry{Name: "liar.img", Digest: "sha256:" + strings.Repeat("ab", 32)})
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	for name, want := range map[string]State{"empty.img": StateVerified, "plain.img": StateComplete, "liar.img": StateInvalid} {
		img := mustLookup(t, c, name)
		if s := img.Info().State; s != want {
			t.Errorf("%s: state %s, want %s", name, s, want)
		}
		h, err := c.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		h.Close()
		if s := img.Info().State; s != want {
			t.Errorf("%s: state %s after an open, want %s", name, s, want)
		}
	}
	if !mustLookup(t, c, "empty.img").Complete() {
		t.Error("a verified empty image is not settled")
	}
	if e := mustLookup(t, c, "liar.img").Info().LastError; !strings.Contains(e, "0 bytes") {
		t.Errorf("error of an empty image with a wrong digest: %q", e)
	}
}
