package cachecore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

const testChunk = 64 << 10 // openTest's chunk size

func TestLazyImageIsPartialUntilVerified(t *testing.T) {
	up := newFake()
	data := randomBytes(3*testChunk+5, 20)
	up.Add("x.img", data, true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	c.verifying <- struct{}{} // hold verification back
	img := mustLookup(t, c, "x.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	if s := img.Info().State; s != StatePartial {
		t.Fatalf("complete but unverified image is %s, want partial", s)
	}
	if img.Complete() {
		t.Fatal("an unverified image may not be kept in the page cache")
	}
	<-c.verifying
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if !img.Complete() {
		t.Fatal("verified image not Complete")
	}
}

func TestStrictServesNothingBeforeVerification(t *testing.T) {
	up := newFake()
	data := randomBytes(5*testChunk+7, 21)
	up.Add("good.img", data, true)
	up.Add("bad.img", data, true)
	up.SetDigest("bad.img", upstreamtest.Digest([]byte("other bytes")))
	up.Add("plain.img", data, false)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.Verify = VerifyStrict })
	defer c.Close()

	good := mustLookup(t, c, "good.img")
	h, err := c.Open(good)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := h.Read(context.Background(), 0, 10)
	if err != nil || sp.Len != 10 {
		t.Fatalf("strict read of a good image: %+v %v", sp, err)
	}
	if s := good.Info().State; s != StateVerified {
		t.Fatalf("strict read returned with the image %s", s)
	}
	h.Close()

	before := up.Fetched()
	bad := mustLookup(t, c, "bad.img")
	h, err = c.Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	sp, err = h.Read(context.Background(), 0, 10)
	if !errors.Is(err, ErrInvalid) || sp.Len != 0 {
		t.Fatalf("strict read of an image that fails verification: %+v %v, want ErrInvalid", sp, err)
	}
	h.Close()
	if up.Fetched()-before != int64(len(data)) {
		t.Fatalf("fetched %d bytes of a %d-byte image", up.Fetched()-before, len(data))
	}
	info := bad.Info()
	if info.State != StateInvalid || info.CachedBytes != 0 ||
		!strings.Contains(info.LastError, upstreamtest.Digest([]byte("other bytes"))) || !strings.Contains(info.LastError, upstreamtest.Digest(data)) {
		t.Fatalf("after failed verification: %+v", info)
	}

	plain := mustLookup(t, c, "plain.img")
	h, _ = c.Open(plain)
	if _, err := h.Read(context.Background(), 0, 1); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if s := plain.Info().State; s != StateComplete {
		t.Fatalf("strict read of an image without digest left it %s, want complete", s)
	}
}

// dataPath is where an image's bytes are kept.
func dataPath(c *Cache, img *Image) string {
	return filepath.Join(c.cfg.Dir, "data", dataName(img.id))
}

func damage(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCheckQuarantinesDamagedChunks(t *testing.T) {
	for _, withDigest := range []bool{true, false} {
		t.Run(map[bool]string{true: "digest", false: "nodigest"}[withDigest], func(t *testing.T) {
			up := newFake()
			data := randomBytes(4*testChunk+100, 22)
			up.Add("d/x.img", data, withDigest)
			up.Add("y.img", randomBytes(testChunk, 23), withDigest)
			c := openTest(t, t.TempDir(), up)
			defer c.Close()
			img := mustLookup(t, c, "d/x.img")
			readAll(t, c, img)
			readAll(t, c, mustLookup(t, c, "y.img"))
			waitFor(t, func() bool { s, _ := c.idx.Sums(img.id); return len(s) == 5*32 })
			waitFor(t, func() bool {
				return img.Info().State == map[bool]State{true: StateVerified, false: StateComplete}[withDigest]
			})

			res, err := c.Check(context.Background(), "")
			if err != nil || !res.OK() || res.Images != 2 || res.Chunks != 6 {
				t.Fatalf("check of a sound cache: %+v %v", res, err)
			}
			damage(t, dataPath(c, img), 2*testChunk+17)
			res, err = c.Check(context.Background(), "d")
			if err != nil || res.Images != 1 || res.BadChunks != 1 || res.OK() {
				t.Fatalf("check after damage: %+v %v", res, err)
			}
			info := img.Info()
			if info.State != StatePartial || info.CachedBytes != int64(len(data))-testChunk ||
				!strings.Contains(info.LastError, "chunk 2") || !strings.Contains(res.Reports[0].Message, "dropped") {
				t.Fatalf("after quarantine: %+v %+v", info, res.Reports)
			}
			before := up.Fetched()
			if got := readAll(t, c, img); !bytes.Equal(got, data) {
				t.Fatal("wrong bytes after quarantine")
			}
			if up.Fetched()-before != testChunk {
				t.Fatalf("refetched %d bytes, want the one dropped chunk", up.Fetched()-before)
			}
			want := map[bool]State{true: StateVerified, false: StateComplete}[withDigest]
			waitFor(t, func() bool { i := img.Info(); return i.State == want && i.LastError == "" })
			if res, err := c.Check(context.Background(), "d/x.img"); err != nil || !res.OK() || res.Chunks != 5 {
				t.Fatalf("check after recovery: %+v %v", res, err)
			}
			if _, err := c.Check(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("check of an unknown name: %v", err)
			}
		})
	}
}

func TestCheckVerifiesCompleteImageWithoutSums(t *testing.T) {
	up := newFake()
	data := randomBytes(2*testChunk, 24)
	up.Add("x.img", data, true)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	waitSums(t, c, img)
	// As if cached before sums were recorded, then damaged.
	if err := c.idx.Write(&index.Batch{Sums: map[string][]byte{img.id: {}}}); err != nil {
		t.Fatal(err)
	}
	damage(t, dataPath(c, img), 5)
	res, err := c.Check(context.Background(), "x.img")
	if err != nil || res.Invalid != 1 || res.Reports[0].State != StateInvalid ||
		!strings.Contains(res.Reports[0].Message, "sha256:") {
		t.Fatalf("check of a damaged image without sums: %+v %v", res, err)
	}
	c.Close()
}

func TestScrubFindsDamage(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(3*testChunk, 25), true)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.ScrubInterval = 20 * time.Millisecond
		cfg.ScrubRate = 100 << 20
	})
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	waitFor(t, func() bool { s, _ := c.idx.Sums(img.id); return s != nil })
	damage(t, dataPath(c, img), testChunk)
	waitFor(t, func() bool { return strings.Contains(img.Info().LastError, "no longer match") })
	if s := img.Info().State; s != StatePartial {
		t.Fatalf("scrubbed image is %s", s)
	}
}

func TestVerificationResumesAfterRestart(t *testing.T) {
	up := newFake()
	data := randomBytes(2*testChunk, 26)
	up.Add("x.img", data, true)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	c.verifying <- struct{}{} // the daemon stops before it verifies
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	c.cancel() // the verification gives up waiting for its turn
	c.Close()
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "x.img")
	waitFor(t, func() bool { return img.Info().State == StateVerified })
}

func TestCheckIsPaced(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(2<<20, 28), true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	waitSums(t, c, img)
	// At 1 KiB/s the first MiB (the burst) passes and the next would take
	// days: the limiter refuses at once to wait past ctx's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := c.checkImage(ctx, img, newChecker(1<<10))
	if r.Chunks != (1<<20)/testChunk || !strings.Contains(r.Message, "check stopped") ||
		r.BadChunks != 0 || img.Info().State != StateVerified {
		t.Fatalf("paced check: %+v", r)
	}
}

func TestRefetchOfVerifiedImageIsChecked(t *testing.T) {
	up := newFake()
	data := randomBytes(4*testChunk, 27)
	up.Add("x.img", data, true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	waitFor(t, func() bool { s, _ := c.idx.Sums(img.id); return s != nil })

	// Chunk 1 is damaged at rest and quarantined; meanwhile the upstream
	// starts serving a wrong byte in it.
	damage(t, dataPath(c, img), testChunk+3)
	if res, err := c.Check(context.Background(), "x.img"); err != nil || res.BadChunks != 1 {
		t.Fatalf("check: %+v %v", res, err)
	}
	wrong := append([]byte(nil), data...)
	wrong[testChunk+100] ^= 1
	up.Replace("x.img", wrong)

	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := h.Read(context.Background(), testChunk, 10)
	if !errors.Is(err, ErrMismatch) || sp.Len != 0 {
		t.Fatalf("refetch of a wrong chunk of a verified image: %+v %v; want ErrMismatch", sp, err)
	}
	h.Close()
	if e := img.Info().LastError; !strings.Contains(e, "chunk 1") || !strings.Contains(e, "verified copy") {
		t.Fatalf("error %q", e)
	}

	up.Replace("x.img", data)
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes after the upstream recovered")
	}
	waitFor(t, func() bool { return img.Info().State == StateVerified })
}

// A strict read of an image that cannot be cached whole fails, and says
// why where users look: the error attribute and the log.
func TestStrictImageOverTheLimitSaysWhy(t *testing.T) {
	up := newFake()
	up.Add("big.img", randomBytes(8*testChunk, 30), true)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.Verify = VerifyStrict
		cfg.MaxSize = 4 * testChunk
	})
	defer c.Close()
	img := mustLookup(t, c, "big.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.Read(context.Background(), 0, 100); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("strict read of an image over the limit: %v, want ErrNoRoom", err)
	}
	if e := img.Info().LastError; !strings.Contains(e, "--verify=strict") || !strings.Contains(e, "big.img") {
		t.Fatalf("error attribute after the refused read: %q", e)
	}
}
