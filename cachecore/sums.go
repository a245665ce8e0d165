package cachecore

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// Chunk sums. Verification records the sha256 of each chunk of an image
// (verify.go); Check compares cached chunks with them (check.go). They
// also guard refetches: once an image with a digest has been verified,
// a chunk fetched again (after an eviction or a quarantine) must hash to
// its recorded sum before it lands, so even a lazy reader never gets a
// wrong byte of an image that was verified once. Sums of an image
// without a digest are not used that way: they record the first copy,
// which nothing proved right.

// ErrMismatch: a chunk fetched again did not match the checksum recorded
// when the image was verified.
var ErrMismatch = errors.New("fetched bytes do not match the verified copy")

// verifiedSums returns the chunk sums of an image with a digest whose
// copy was verified, read from the index once; nil if there are none.
func (img *Image) verifiedSums() []byte {
	if img.entry.Digest == "" || img.nChunks == 0 {
		return nil
	}
	img.mu.Lock()
	s, read := img.sums, img.sumsRead
	img.mu.Unlock()
	if read {
		return s
	}
	s, err := img.c.idx.Sums(img.id)
	if err != nil || len(s) != img.nChunks*sha256.Size {
		s = nil
	}
	img.mu.Lock()
	img.sums, img.sumsRead = s, true
	img.mu.Unlock()
	return s
}

// forgetSums makes the next verifiedSums read the index again (new sums
// were recorded) and frees the memory of a complete image's sums.
func (img *Image) forgetSumsLocked() {
	img.sums, img.sumsRead = nil, false
}

// chunkCheck hashes the chunks of one range reply as they are written
// and compares each with its verified sum. A nil *chunkCheck checks
// nothing.
type chunkCheck struct {
	img  *Image
	sums []byte
	h    hash.Hash
	sum  []byte
}

// refetchCheck returns the check for a fetch of img's chunks, or nil if
// the image has no verified sums.
func (img *Image) refetchCheck() *chunkCheck {
	s := img.verifiedSums()
	if s == nil {
		return nil
	}
	return &chunkCheck{img: img, sums: s, h: sha256.New()}
}

func (k *chunkCheck) write(p []byte) {
	if k != nil {
		k.h.Write(p)
	}
}

// chunkDone compares chunk i, all of whose bytes were written, with its
// sum, and starts over for the next chunk.
func (k *chunkCheck) chunkDone(i int) error {
	if k == nil {
		return nil
	}
	k.sum = k.h.Sum(k.sum[:0])
	k.h.Reset()
	if bytes.Equal(k.sum, k.sums[i*sha256.Size:(i+1)*sha256.Size]) {
		return nil
	}
	return &Error{Op: "fetch", Name: k.img.entry.Name, Err: fmt.Errorf(
		"%w: chunk %d (bytes %d-%d) hashes to sha256:%x, the verified copy's to sha256:%x; not kept",
		ErrMismatch, i, int64(i)*k.img.chunkSize, int64(i)*k.img.chunkSize+k.img.chunkLen(i)-1,
		k.sum, k.sums[i*sha256.Size:(i+1)*sha256.Size])}
}
