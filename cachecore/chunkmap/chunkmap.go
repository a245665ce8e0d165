// Package chunkmap records which chunks of an image are present in its
// data file: one bit per chunk, with its invariants, and the encoding the
// index stores (cachecore/index keeps the bytes, not their meaning).
// It does no I/O and takes no locks: its owner (the image) serializes
// calls.
package chunkmap

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
)

// Map records which chunks of an image are present in its data file.
// Its words are allocated when the first chunk is set: a catalog lists
// many images of which few are ever read, and an image's map may be large
// (one bit per chunk, up to 32 MiB for upstream.MaxSize).
//
// INVARIANT: count == number of set bits in words, no bit at or past n
// is set, and words is nil or has a word for every chunk. CheckInvariants
// verifies these (tests call it).
type Map struct {
	words []uint64
	n     int // number of chunks
	count int // number of present chunks
}

// Chunks is the number of chunks of an image of size bytes. size and
// chunkSize are bounded (upstream.Entry.Validate, Config): no overflow.
func Chunks(size, chunkSize int64) int {
	return int((size + chunkSize - 1) / chunkSize)
}

// New returns a map of n chunks, none present.
func New(n int) Map {
	return Map{n: n}
}

// Has reports whether chunk i is present.
func (m *Map) Has(i int) bool {
	return m.words != nil && m.words[i/64]&(1<<(uint(i)%64)) != 0
}

// Set marks chunk i present and reports whether it was missing before.
func (m *Map) Set(i int) bool {
	if m.words == nil {
		m.words = make([]uint64, (m.n+63)/64)
	}
	w, b := i/64, uint64(1)<<(uint(i)%64)
	if m.words[w]&b != 0 {
		return false
	}
	m.words[w] |= b
	m.count++
	return true
}

// Unset marks chunk i missing and reports whether it was present.
func (m *Map) Unset(i int) bool {
	if m.words == nil {
		return false
	}
	w, b := i/64, uint64(1)<<(uint(i)%64)
	if m.words[w]&b == 0 {
		return false
	}
	m.words[w] &^= b
	m.count--
	return true
}

// Count is the number of present chunks.
func (m *Map) Count() int { return m.count }

// Len is the number of chunks.
func (m *Map) Len() int { return m.n }

// Clear marks every chunk missing.
func (m *Map) Clear() {
	clear(m.words)
	m.count = 0
}

// Complete reports whether every chunk is present.
func (m *Map) Complete() bool { return m.count == m.n }

// NextMissing returns the first missing chunk in [from, to), or to.
func (m *Map) NextMissing(from, to int) int {
	if m.words == nil {
		return min(from, to)
	}
	for i := from; i < to; {
		sh := uint(i) % 64
		missing := ^m.words[i/64] >> sh // zeros shift in: past the word counts as present
		if missing == 0 {
			i += 64 - int(sh)
			continue
		}
		return min(i+bits.TrailingZeros64(missing), to)
	}
	return to
}

// Marshal encodes the map as the chunk count followed by the words,
// little-endian; trailing all-zero words are left out, so an image with
// nothing cached costs 4 bytes.
func (m *Map) Marshal() []byte {
	used := len(m.words)
	for used > 0 && m.words[used-1] == 0 {
		used--
	}
	buf := make([]byte, 4+8*used)
	binary.LittleEndian.PutUint32(buf, uint32(m.n))
	for i, w := range m.words[:used] {
		binary.LittleEndian.PutUint64(buf[4+8*i:], w)
	}
	return buf
}

// ErrMismatch: an encoded map is not one of an image of that many chunks.
var ErrMismatch = errors.New("chunk map does not match its image")

// Unmarshal decodes a map of n chunks encoded by Marshal.
func Unmarshal(buf []byte, n int) (Map, error) {
	m := New(n)
	if len(buf) < 4 || int(binary.LittleEndian.Uint32(buf)) != n || (len(buf)-4)%8 != 0 || (len(buf)-4)/8 > (n+63)/64 {
		return m, ErrMismatch
	}
	if len(buf) == 4 {
		return m, nil
	}
	m.words = make([]uint64, (n+63)/64)
	for i := range (len(buf) - 4) / 8 {
		m.words[i] = binary.LittleEndian.Uint64(buf[4+8*i:])
		m.count += bits.OnesCount64(m.words[i])
	}
	if n%64 != 0 && len(m.words) > 0 && m.words[len(m.words)-1]>>(uint(n)%64) != 0 {
		return New(n), ErrMismatch
	}
	return m, nil
}

// Clone returns a copy that shares nothing with m.
func (m *Map) Clone() Map {
	return Map{words: slices.Clone(m.words), n: m.n, count: m.count}
}

// CheckInvariants verifies the invariants above (for tests).
func (m *Map) CheckInvariants() error {
	c := 0
	for _, w := range m.words {
		c += bits.OnesCount64(w)
	}
	if c != m.count {
		return errors.New("chunkmap: count out of step with bits")
	}
	if m.n%64 != 0 && len(m.words) > 0 && m.words[len(m.words)-1]>>(uint(m.n)%64) != 0 {
		return errors.New("chunkmap: bit set past the last chunk")
	}
	if m.words != nil && len(m.words) != (m.n+63)/64 {
		return errors.New("chunkmap: wrong number of words")
	}
	return nil
}
