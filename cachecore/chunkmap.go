package cachecore

import (
	"encoding/binary"
	"errors"
	"math/bits"
)

// chunkMap records which chunks of an image are present in its data file.
//
// INVARIANT: count == number of set bits in words, and no bit at or past n
// is set. checkInvariants verifies both (tests call it).
type chunkMap struct {
	words []uint64
	n     int // number of chunks
	count int // number of present chunks
}

func newChunkMap(n int) chunkMap {
	return chunkMap{words: make([]uint64, (n+63)/64), n: n}
}

func (m *chunkMap) has(i int) bool {
	return m.words[i/64]&(1<<(uint(i)%64)) != 0
}

// set marks chunk i present and reports whether it was missing before.
func (m *chunkMap) set(i int) bool {
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
	if len(buf) < 4 || int(binary.LittleEndian.Uint32(buf)) != n || (len(buf)-4)%8 != 0 || (len(buf)-4)/8 > len(m.words) {
		return m, errBadChunkMap
	}
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
	return chunkMap{words: append([]uint64(nil), m.words...), n: m.n, count: m.count}
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
	if len(m.words) != (m.n+63)/64 {
		return errors.New("chunkMap: wrong number of words")
	}
	return nil
}
