package cachecore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
)

// Verification. An image's sha256 is grown as its chunks land
// (hashing.go) and compared with its published digest; then the sha256
// of each chunk is recorded in the index (sums_after.go), so that the
// data can be checked at rest later (check.go). A mismatch with the
// digest makes the image invalid: every chunk is dropped, the error
// names both digests, and the next open fetches it again. An image without a digest gets its chunk sums recorded all the
// same (what was fetched is all there is to trust), and stays "complete"
// rather than "verified". An empty image needs no pass: it is verified
// (or invalid) by its digest alone.

// verifyRun is one verification of an image; done is closed when it
// ends, err says why it ended without a verdict (nil: see the image's
// verdict).
type verifyRun struct {
	done chan struct{}
	err  error
}

// imageCompleted runs when an image's last chunk lands: the index learns
// of the completion soon rather than at the next tick. The hasher, which
// has followed the chunks as they landed, gives the verdict.
func (c *Cache) imageCompleted(img *Image) {
	c.kickFlush()
}

// startVerifyLocked makes sure the image's hash runs to a verdict and
// returns the verification to wait for. An image whose verdict was given
// is hashed again (its sums may not have been recorded).
func (img *Image) startVerifyLocked() *verifyRun {
	v := &img.hashState
	if v.run == nil {
		v.run = &verifyRun{done: make(chan struct{})}
	}
	run := v.run
	if v.done {
		v.resetLocked()
	}
	img.hashSoonLocked()
	return run
}

// verdictWait bounds how long an open of a complete image waits for the
// verdict its hash is about to give. A reader that opens an image right
// after reading it cold (cat, then sha256sum; a download, then a boot)
// would otherwise find it unverified by a few chunks' hashing and be
// served through the daemon; once verified the open may be passthrough,
// several times faster.
const verdictWait = 250 * time.Millisecond

// awaitVerdictUnderway waits, at most verdictWait, for the verdict on a
// complete image with a digest that is being hashed, in strict mode. A
// lazy open need not: the kernel keeps the pages of such an image
// (Image.KeepPages), and they serve the re-read faster than a wait
// would.
func (img *Image) awaitVerdictUnderway(ctx context.Context) {
	if img.c.cfg.Verify != VerifyStrict {
		return
	}
	img.mu.Lock()
	v := &img.hashState
	if !img.present.Complete() || img.entry.Digest == "" || img.rec.Verdict != index.Unchecked || !v.running {
		img.mu.Unlock()
		return
	}
	run := img.startVerifyLocked()
	img.mu.Unlock()
	t := time.NewTimer(verdictWait)
	defer t.Stop()
	select {
	case <-run.done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// settleEmpty gives an empty image with a digest its verdict: there is
// nothing to fetch, and the sha256 of nothing is known.
func settleEmpty(r *index.Record) {
	if r.Size != 0 || r.Digest == "" || r.Verdict != index.Unchecked {
		return
	}
	r.Verdict = index.Invalid
	if r.Digest == emptyDigest {
		r.Verdict = index.Verified
	} else {
		r.LastError = (&Error{Op: "verify", Name: r.Name, Err: fmt.Errorf(
			"%w: upstream digest %s for an image of 0 bytes, whose sha256 is %s", ErrInvalid, r.Digest, emptyDigest)}).Error()
	}
}

const emptyDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

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
