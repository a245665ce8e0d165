package cachecore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// An image with a digest is verified by one pass over its bytes; its
// chunk sums come after the verdict, from a second pass, and are those
// of the verified bytes.
func TestSumsAfterVerdict(t *testing.T) {
	up := newFake()
	const n = 5
	data := randomBytes(n*testChunk-7, 50)
	up.Add("x.img", data, true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	c.sums.token <- struct{}{} // hold the sums back
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	if got := c.Stats().BytesHashed.Load(); got != uint64(len(data)) {
		t.Fatalf("%d bytes hashed for the verdict on %d", got, len(data))
	}
	if s, _ := c.idx.Sums(img.id); s != nil {
		t.Fatal("sums recorded before their pass ran")
	}
	<-c.sums.token
	waitSums(t, c, img)
	s, _ := c.idx.Sums(img.id)
	for i := range n {
		chunk := data[i*testChunk : min((i+1)*testChunk, len(data))]
		if sum := sha256.Sum256(chunk); !bytes.Equal(s[i*32:(i+1)*32], sum[:]) {
			t.Fatalf("chunk %d: recorded sum is not the verified bytes'", i)
		}
	}
}

// A data file changed between the verdict and the end of the sums' pass
// gets no sums: they would vouch for bytes nothing verified. A check then
// verifies the image again against its digest, and finds the change.
func TestSumsNotRecordedForChangedFile(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(3*testChunk, 51), true)
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	c.sums.token <- struct{}{}
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	damage(t, dataPath(c, img), testChunk+1)
	<-c.sums.token
	img.awaitSums(context.Background())
	if s, _ := c.idx.Sums(img.id); s != nil {
		t.Fatal("sums recorded for a data file changed after its verdict")
	}
	res, err := c.Check(context.Background(), "x.img")
	if err != nil || res.Invalid != 1 {
		t.Fatalf("check of the changed image: %+v %v", res, err)
	}
}

// While the verdict on a complete image is still to come, lazy mode lets
// the kernel keep its pages (they hold what lazy reads were served);
// strict mode does not, and a failed verification ends it.
func TestKeepPagesBeforeVerdict(t *testing.T) {
	for _, mode := range []VerifyMode{VerifyLazy, VerifyStrict} {
		t.Run(mode.String(), func(t *testing.T) {
			up := newFake()
			data := randomBytes(3*testChunk, 52)
			up.Add("x.img", data, true)
			c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.Verify = mode })
			defer c.Close()
			img := mustLookup(t, c, "x.img")
			if img.KeepPages() {
				t.Fatal("pages of an image not cached kept")
			}
			if mode == VerifyStrict {
				readAll(t, c, img)
				if !img.KeepPages() || !img.Complete() {
					t.Fatal("strict: a verified image's pages not kept")
				}
				return
			}
			c.verifying <- struct{}{} // hold the verdict back
			readAll(t, c, img)
			if img.Complete() || !img.KeepPages() {
				t.Fatalf("lazy, complete, verdict to come: settled %v, keep pages %v; want false, true", img.Complete(), img.KeepPages())
			}
			<-c.verifying
			waitFor(t, func() bool { return img.Info().State == StateVerified })
			if !img.KeepPages() {
				t.Fatal("a verified image's pages not kept")
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		up := newFake()
		up.Add("x.img", randomBytes(2*testChunk, 53), true)
		up.SetDigest("x.img", upstreamtest.Digest([]byte("something else")))
		c := openTest(t, t.TempDir(), up)
		defer c.Close()
		img := mustLookup(t, c, "x.img")
		readAll(t, c, img)
		waitFor(t, func() bool { return img.Info().State == StateInvalid })
		if img.KeepPages() {
			t.Fatal("pages of an image that failed verification kept")
		}
	})
}

// A stop right after a verdict gives the sums' pass under way a moment
// to end, so that the next mount has them.
func TestCloseLetsSumsFinish(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(3*testChunk, 54), true)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	c.sums.token <- struct{}{} // the pass waits its turn
	img := mustLookup(t, c, "x.img")
	readAll(t, c, img)
	waitFor(t, func() bool { return img.Info().State == StateVerified })
	go func() {
		time.Sleep(50 * time.Millisecond) // Close is waiting by then
		<-c.sums.token
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "x.img")
	if s, err := c.idx.Sums(img.id); err != nil || len(s) != 3*sha256.Size {
		t.Fatalf("sums after a stop right after the verdict: %d bytes, %v", len(s), err)
	}
}
