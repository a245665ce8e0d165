package cachecore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// Damage at rest between two mounts and during one (rest.go).

// verifiedThenReopened caches x.img, verified, closes the cache, damages
// byte off of its data file and opens the cache again: a new mount.
func verifiedThenReopened(t *testing.T, mode VerifyMode, off int64) (*Cache, *upstreamtest.Upstream, *Image, []byte) {
	t.Helper()
	up := newFake()
	data := randomBytes(4*testChunk+9, 30)
	up.Add("x.img", data, true)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	waitSums(t, c, img)
	c.Close()
	damage(t, dataPath(c, img), off)
	c = openTest(t, dir, up, func(cfg *Config) { cfg.Verify = mode })
	t.Cleanup(func() { c.Close() })
	return c, up, mustLookup(t, c, "x.img"), data
}

func TestStrictChecksAtFirstOpenAfterMount(t *testing.T) {
	c, up, img, data := verifiedThenReopened(t, VerifyStrict, 2*testChunk+7)
	if img.Info().State != StateVerified || img.Complete() {
		t.Fatalf("verified image after a new mount: state %s, settled %v; want verified and not settled before a check",
			img.Info().State, img.Complete())
	}
	before := up.Fetched()
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.CheckAtOpen(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The image is open (this handle), so the damaged chunk stays in
	// place and is fetched again at once.
	if got := up.Fetched() - before; got != testChunk {
		t.Fatalf("fetched %d bytes at open, want the one damaged chunk", got)
	}
	b := make([]byte, len(data))
	if n, err := h.ReadAt(b, 0); n != len(b) || err != nil || !bytes.Equal(b, data) {
		t.Fatalf("strict read after the check: %d %v, right bytes %v", n, err, bytes.Equal(b, data))
	}
	if got := up.Fetched() - before; got != testChunk {
		t.Fatalf("fetched %d bytes, want the one damaged chunk", got)
	}
	if !img.Complete() || img.Info().State != StateVerified {
		t.Fatalf("after the refetch: settled %v, state %s", img.Complete(), img.Info().State)
	}
}

// A strict read checks even when nothing called CheckAtOpen.
func TestStrictReadChecksAfterMount(t *testing.T) {
	c, _, img, data := verifiedThenReopened(t, VerifyStrict, testChunk)
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("strict read served the damaged byte")
	}
}

func TestLazyFirstOpenAfterMountIsNotChecked(t *testing.T) {
	c, up, img, data := verifiedThenReopened(t, VerifyLazy, 3*testChunk)
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CheckAtOpen(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.Close()
	// Documented: lazy serves what is at rest until the scrub finds it.
	if !img.Complete() || bytes.Equal(readAll(t, c, img), data) {
		t.Fatal("lazy first open after a mount: want it served as it is, unchecked")
	}
	// A write to the data file after that open is seen at the next one.
	damage(t, dataPath(c, img), 3*testChunk) // the damage undone: a change all the same
	damage(t, dataPath(c, img), testChunk+1)
	before := up.Fetched()
	h, err = c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.CheckAtOpen(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := up.Fetched() - before; got != testChunk {
		t.Fatalf("open after a change fetched %d bytes, want the one damaged chunk", got)
	}
	b := make([]byte, len(data))
	if n, err := h.ReadAt(b, 0); n != len(b) || err != nil || !bytes.Equal(b, data) {
		t.Fatalf("lazy read after the check: %d %v", n, err)
	}
	if got := up.Fetched() - before; got != testChunk {
		t.Fatalf("fetched %d bytes, want the one damaged chunk", got)
	}
}

func TestStrictChecksAgainAfterChangeDuringMount(t *testing.T) {
	up := newFake()
	data := randomBytes(3*testChunk, 31)
	up.Add("x.img", data, true)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.Verify = VerifyStrict })
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	if !img.Complete() {
		t.Fatal("verified in this mount, yet not settled")
	}
	waitSums(t, c, img)
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.CheckAtOpen(context.Background()); err != nil || !img.Complete() {
		t.Fatalf("unchanged since its verification: %v, settled %v", err, img.Complete())
	}
	h.Close()
	damage(t, dataPath(c, img), 5)
	h, err = c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	before := up.Fetched()
	if err := h.CheckAtOpen(context.Background()); err != nil || up.Fetched()-before != testChunk {
		t.Fatalf("open after a change: %v, fetched %d; want chunk 0 fetched again", err, up.Fetched()-before)
	}
	b := make([]byte, len(data))
	if n, err := h.ReadAt(b, 0); n != len(b) || err != nil || !bytes.Equal(b, data) {
		t.Fatalf("strict read after a change during the mount: %d %v, right bytes %v", n, err, bytes.Equal(b, data))
	}
}

// A check that cannot be made fails the open (and a strict read) rather
// than passing or going round for ever.
func TestCheckAtOpenFailsWithoutDataFile(t *testing.T) {
	c, _, img, _ := verifiedThenReopened(t, VerifyStrict, 0)
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := os.Remove(dataPath(c, img)); err != nil {
		t.Fatal(err)
	}
	if err := h.CheckAtOpen(context.Background()); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("check at open without a data file: %v", err)
	}
	if _, err := h.Read(context.Background(), 0, 10); err == nil {
		t.Fatal("strict read of an image that could not be checked succeeded")
	}
	if e := img.Info().LastError; !strings.Contains(e, "missing") {
		t.Fatalf("error %q", e)
	}
}

func TestCheckAtOpenGivesUpWithCtx(t *testing.T) {
	c, up, img, _ := verifiedThenReopened(t, VerifyStrict, 0)
	before := up.Fetched()
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.CheckAtOpen(ctx); err != nil && err != context.Canceled { // (it may have ended first)
		t.Fatalf("check at open with ctx done: %v", err)
	}
	// The check goes on for the next open.
	waitFor(t, func() bool { return up.Fetched()-before == testChunk })
}

// Damage found while the image is open stays in place (a passthrough
// open reads the file itself); if it cannot be fetched again, the open
// that found it fails and says why, rather than serve it.
func TestCheckAtOpenFailsWhenDamageCannotBeRepaired(t *testing.T) {
	c, up, img, data := verifiedThenReopened(t, VerifyLazy, 0)
	held, err := c.Open(img) // a reader that has it open all along
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := held.CheckAtOpen(context.Background()); err != nil {
		t.Fatal(err)
	}
	damage(t, dataPath(c, img), testChunk+5)
	up.SetFetchErr(func(string, int64, int64) error { return errors.New("upstream down") })
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = h.CheckAtOpen(context.Background())
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "upstream down") {
		t.Fatalf("open of an image whose damage cannot be repaired: %v", err)
	}
	// (Chunk 0 was damaged before this mount, unchecked by lazy mode's first open.)
	if e := img.Info().LastError; !strings.Contains(e, "chunks 0, 1") || !strings.Contains(e, "no longer match") ||
		!strings.Contains(e, "upstream down") {
		t.Fatalf("error %q", e)
	}
	h.Close()
	// The damage is still in the file, which held has open: every open
	// tries again, and fails while the upstream does.
	h2, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.CheckAtOpen(context.Background()); !errors.Is(err, ErrDamaged) {
		t.Fatalf("second open: %v", err)
	}
	h2.Close()
	up.SetFetchErr(nil)
	h3, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h3.Close()
	if err := h3.CheckAtOpen(context.Background()); err != nil {
		t.Fatalf("open once the upstream is back: %v", err)
	}
	b := make([]byte, len(data))
	if n, err := held.ReadAt(b, 0); n != len(b) || err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read after the repair: %d %v", n, err)
	}
}
