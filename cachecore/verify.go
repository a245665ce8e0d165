package cachecore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/imgcache/imgcache/cachecore/index"
)

// Verification. When an image's last chunk lands, its whole data file is
// hashed once (one image at a time: hashing is CPU bound). The pass
// yields two things: the image's sha256, compared with its published
// digest, and the sha256 of each chunk, recorded in the index so that the
// data can be checked at rest later (check.go). A mismatch with the
// digest makes the image invalid: every chunk is dropped, the error names
// both digests, and the next open fetches it again. An image without a
// digest gets its chunk sums recorded all the same (what was fetched is
// all there is to trust), and stays "complete" rather than "verified".

// verifyRun is one verification of an image; done is closed when it
// ends, err says why it ended without a verdict (nil: see the image's
// verdict).
type verifyRun struct {
	done chan struct{}
	err  error
}

// imageCompleted runs when an image's last chunk lands: it is verified,
// and the index learns of the completion soon rather than at the next
// tick.
func (c *Cache) imageCompleted(img *Image) {
	c.kickFlush()
	img.mu.Lock()
	img.startVerifyLocked()
	img.mu.Unlock()
}

// startVerifyLocked starts a verification of the image unless one is
// running, and returns the one running.
func (img *Image) startVerifyLocked() *verifyRun {
	if img.verifyRun == nil {
		img.verifyRun = &verifyRun{done: make(chan struct{})}
		img.c.wg.Add(1)
		go img.c.verify(img, img.verifyRun)
	}
	return img.verifyRun
}

// verify hashes a complete image and records the verdict and the chunk
// sums.
func (c *Cache) verify(img *Image, run *verifyRun) {
	defer c.wg.Done()
	defer func() {
		img.mu.Lock()
		img.verifyRun = nil
		img.mu.Unlock()
		close(run.done)
	}()
	select {
	case c.verifying <- struct{}{}:
		defer func() { <-c.verifying }()
	case <-c.ctx.Done():
		run.err = ErrClosed
		return
	}
	got, sums, stamp, err := c.hashData(img)
	if err != nil {
		if c.ctx.Err() != nil {
			run.err = ErrClosed
			return
		}
		run.err = &Error{Op: "verify", Name: img.entry.Name, Err: err}
		img.mu.Lock()
		defer img.mu.Unlock()
		if !img.present.Complete() { // evicted or dropped while it waited its turn: nothing to verify
			return
		}
		c.log.Warn("verifying image", "image", img.entry.Name, "err", err)
		img.recordErrorLocked(run.err)
		return
	}
	want := strings.TrimPrefix(img.entry.Digest, "sha256:")
	if want != "" && got != want {
		c.invalidate(img, want, got)
		return
	}
	// Sums before the verdict: a verified image always has its sums.
	if err := c.idx.Write(&index.Batch{Sums: map[string][]byte{img.id: sums}}); err != nil {
		c.log.Warn("recording chunk checksums", "image", img.entry.Name, "err", err)
	}
	img.mu.Lock()
	if img.present.Complete() && want != "" {
		img.rec.Verdict = index.Verified
		img.dirty = true
	}
	img.markCheckedLocked(stamp) // the hash was a check of every chunk
	img.forgetSumsLocked()
	img.mu.Unlock()
	c.kickFlush()
}

// invalidate drops every chunk of an image whose bytes hashed to got
// rather than its digest want.
func (c *Cache) invalidate(img *Image, want, got string) {
	err := &Error{Op: "verify", Name: img.entry.Name, Err: fmt.Errorf(
		"%w: upstream digest sha256:%s, fetched bytes hash to sha256:%s; cached copy dropped, the next open fetches it again",
		ErrInvalid, want, got)}
	img.mu.Lock()
	if !img.present.Complete() { // dropped meanwhile
		img.mu.Unlock()
		return
	}
	img.rec.Verdict = index.Invalid
	img.recordErrorLocked(err)
	dropErr := img.dropLocked()
	img.mu.Unlock()
	c.log.Error("image failed verification", "image", img.entry.Name, "want", want, "got", got)
	c.dropped(img, 0, img.entry.Size)
	if dropErr != nil {
		c.log.Warn("dropping invalid cache file", "image", img.entry.Name, "err", dropErr)
	}
	c.kickFlush()
}

// hashData reads an image's data file once and returns its sha256, the
// sha256 of each chunk, concatenated, and the file's stamp before the
// read.
func (c *Cache) hashData(img *Image) (string, []byte, fileStamp, error) {
	f, err := c.store.OpenFile(img.id, os.O_RDONLY)
	if err != nil {
		return "", nil, fileStamp{}, err
	}
	defer f.Close()
	stamp, err := stampOf(f)
	if err != nil {
		return "", nil, fileStamp{}, err
	}
	bufp := piecePool.Get().(*[]byte)
	defer piecePool.Put(bufp)
	whole, chunk := sha256.New(), sha256.New()
	both := io.MultiWriter(whole, chunk)
	sums := make([]byte, 0, img.nChunks*sha256.Size)
	for i := range img.nChunks {
		chunk.Reset()
		r := io.NewSectionReader(f, int64(i)*img.chunkSize, img.chunkLen(i))
		if _, err := io.CopyBuffer(both, ctxReader{c, r}, *bufp); err != nil {
			return "", nil, fileStamp{}, err
		}
		sums = chunk.Sum(sums)
	}
	return hex.EncodeToString(whole.Sum(nil)), sums, stamp, nil
}

// awaitVerified waits until the whole image is present and trusted:
// verified against its digest, or, without a digest, complete with its
// chunk sums recorded; and checked since the mount (rest.go). It fetches
// what is missing; a failed verification or check is returned as the
// error.
func (img *Image) awaitVerified(ctx context.Context) error {
	for {
		img.mu.Lock()
		switch {
		case img.rec.Verdict == index.Invalid:
			err := errors.New(img.rec.LastError)
			img.mu.Unlock()
			return &Error{Op: "read", Name: img.entry.Name, Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
		case !img.present.Complete():
			img.mu.Unlock()
			if err := img.ensure(ctx, 0, img.nChunks-1); err != nil {
				return err
			}
			continue
		case img.trustedLocked() && img.rest.checked:
			img.mu.Unlock()
			return nil
		case img.trustedLocked():
			run, err := img.startRestCheckLocked()
			img.mu.Unlock()
			if err != nil {
				return err
			}
			if err := awaitRun(ctx, run); err != nil {
				return err
			}
			continue
		}
		if img.c.ctx.Err() != nil {
			img.mu.Unlock()
			return ErrClosed
		}
		run := img.startVerifyLocked()
		img.mu.Unlock()
		if err := awaitRun(ctx, run); err != nil {
			return err
		}
	}
}

// awaitRun waits for a verification or check to end and returns its
// error, or ctx's.
func awaitRun(ctx context.Context, run *verifyRun) error {
	select {
	case <-run.done:
		return run.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trustedLocked: every chunk is present and, if the image has a digest,
// its bytes were verified against it. Without a digest there is nothing
// to check the first fetch against: complete is all it can be.
func (img *Image) trustedLocked() bool {
	if !img.present.Complete() {
		return false
	}
	return img.entry.Digest == "" || img.rec.Verdict == index.Verified
}

// ctxReader stops a long read when the cache closes.
type ctxReader struct {
	c *Cache
	r io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.c.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// VerifyMode says when the bytes of an image with a digest may be served.
type VerifyMode int

const (
	// VerifyLazy serves chunks as they arrive; the image's state says
	// "partial" until the whole image has been verified, and a failed
	// verification drops it (bytes already read were wrong).
	VerifyLazy VerifyMode = iota
	// VerifyStrict serves no byte of an image before all of it has been
	// fetched and verified against its digest (an image without a
	// digest: fetched whole).
	VerifyStrict
)

// ParseVerifyMode parses "lazy" or "strict".
func ParseVerifyMode(s string) (VerifyMode, error) {
	switch s {
	case "lazy":
		return VerifyLazy, nil
	case "strict":
		return VerifyStrict, nil
	}
	return 0, fmt.Errorf("verify mode %q: want lazy or strict", s)
}

func (m VerifyMode) String() string {
	if m == VerifyStrict {
		return "strict"
	}
	return "lazy"
}

// resumeVerification verifies, at start-up, the complete images with a
// digest whose verification a stop interrupted.
func (c *Cache) resumeVerification() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, img := range c.images {
		img.mu.Lock()
		if img.present.Complete() && img.nChunks > 0 && img.entry.Digest != "" && img.rec.Verdict == index.Unchecked {
			img.startVerifyLocked()
		}
		img.mu.Unlock()
	}
}
