package cachecore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// imageCompleted runs when an image's last chunk lands: an image with a
// digest is checked against it, and the index learns of the completion
// soon rather than at the next tick.
func (c *Cache) imageCompleted(img *Image) {
	c.kickFlush()
	if img.entry.Digest == "" {
		return
	}
	c.wg.Add(1)
	go c.verify(img)
}

// verify hashes a complete image and records the verdict. A mismatch
// drops every chunk (the next read fetches again) and records an error
// naming both digests.
func (c *Cache) verify(img *Image) {
	defer c.wg.Done()
	select { // one image at a time: hashing is CPU bound
	case c.verifying <- struct{}{}:
		defer func() { <-c.verifying }()
	case <-c.ctx.Done():
		return
	}
	got, err := c.hashData(img)
	if err != nil {
		if c.ctx.Err() == nil {
			c.log.Warn("verifying image", "image", img.entry.Name, "err", err)
		}
		return
	}
	want := strings.TrimPrefix(img.entry.Digest, "sha256:")
	img.mu.Lock()
	if !img.present.complete() { // dropped meanwhile
		img.mu.Unlock()
		return
	}
	if got == want {
		img.rec.Verdict = verified
		img.dirty = true
		img.mu.Unlock()
		c.kickFlush()
		return
	}
	img.rec.Verdict = invalid
	img.present.clear()
	img.recordErrorLocked(&Error{Op: "verify", Name: img.entry.Name, Err: fmt.Errorf(
		"%w: upstream digest sha256:%s, cached bytes hash to sha256:%s; cached copy dropped",
		ErrInvalid, want, got)})
	img.mu.Unlock()
	c.log.Error("image failed verification", "image", img.entry.Name, "want", want, "got", got)
	if err := c.store.punch(img.id, img.entry.Size); err != nil {
		c.log.Warn("dropping invalid cache file", "image", img.entry.Name, "err", err)
	}
	c.kickFlush()
}

func (c *Cache) hashData(img *Image) (string, error) {
	f, err := c.store.root.Open(dataName(img.id))
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	r := io.NewSectionReader(f, 0, img.entry.Size)
	if _, err := io.Copy(h, ctxReader{c, r}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
