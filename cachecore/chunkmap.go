package cachecore

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
)

// chunkMap records which chunks of an image are present in its data file.
// Its words are allocated when the first chunk is set: a catalog lists
// many images of which few are ever read, and an image's map may be large
// (one bit per chunk, up to 32 MiB for upstream.MaxSize).
//
// INVARIANT: count == number of set bits in words, no bit at or past n
// is set, and words is nil or has a word for every chunk. checkInvariants
// verifies these (tests call it).
type chunkMap struct {
	words []uint64
	n     int // number of chunks
	count int // number of present chunks
}

// chunkCount is the number of chunks of an image of size bytes. size and
// chunkSize are bounded (upstream.Entry.Validate, Config): no overflow.
func chunkCount(size, chunkSize int64) int {
	return int((size + chunkSize - 1) / chunkSize)
}

func newChunkMap(n int) chunkMap {
	return chunkMap{n: n}
}

func (m *chunkMap) has(i int) bool {
	return m.words != nil && m.words[i/64]&(1<<(uint(i)%64)) != 0
}

// set marks chunk i present and reports whether it was missing before.
func (m *chunkMap) set(i int) bool {
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

// unset marks chunk i missing and reports whether it was present.
func (m *chunkMap) unset(i int) bool {
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

func (m *chunkMap) clear() {
	clear(m.words)
	m.count = 0
}

func (m *chunkMap) complete() bool { return m.count == m.n }

// nextMissing returns the first missing chunk in [from, to), or to.
func (m *chunkMap) nextMissing(from, to int) int {
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

// marshal encodes the map as the chunk count followed by the words,
// little-endian; trailing all-zero words are left out, so an image with
// nothing cached costs 4 bytes.
func (m *chunkMap) marshal() []byte {
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

var errBadChunkMap = errors.New("chunk map does not match its image")

func unmarshalChunkMap(buf []byte, n int) (chunkMap, error) {
	m := newChunkMap(n)
	if len(buf) < 4 || int(binary.LittleEndian.Uint32(buf)) != n || (len(buf)-4)%8 != 0 || (len(buf)-4)/8 > (n+63)/64 {
		return m, errBadChunkMap
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
		return newChunkMap(n), errBadChunkMap
	}
	return m, nil
}

func (m *chunkMap) clone() chunkMap {
	return chunkMap{words: slices.Clone(m.words), n: m.n, count: m.count}
}

func (m *chunkMap) checkInvariants() error {
	c := 0
	for _, w := range m.words {
		c += bits.OnesCount64(w)
	}
	if c != m.count {
		return errors.New("chunkMap: count out of step with bits")
	}
	if m.n%64 != 0 && len(m.words) > 0 && m.words[len(m.words)-1]>>(uint(m.n)%64) != 0 {
		return errors.New("chunkMap: bit set past the last chunk")
	}
	if m.words != nil && len(m.words) != (m.n+63)/64 {
		return errors.New("chunkMap: wrong number of words")
	}
	return nil
}
