package cachecore

import (
	"bytes"
	"testing"
)

// FuzzUnmarshalChunkMap: whatever the index holds, a chunk map read from
// it keeps its invariants (or is refused), and one that is kept encodes
// back to what it read.
func FuzzUnmarshalChunkMap(f *testing.F) {
	m := newChunkMap(130)
	for _, i := range []int{0, 1, 63, 64, 129} {
		m.set(i)
	}
	f.Add(m.marshal(), 130)
	empty := newChunkMap(5)
	f.Add(empty.marshal(), 5)
	f.Add([]byte{5, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0}, 5)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, buf []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		m, err := unmarshalChunkMap(buf, n)
		if err != nil {
			return
		}
		if err := m.checkInvariants(); err != nil {
			t.Fatalf("unmarshalled map breaks its invariants: %v", err)
		}
		if m.n != n {
			t.Fatalf("map of %d chunks, want %d", m.n, n)
		}
		again, err := unmarshalChunkMap(m.marshal(), n)
		if err != nil || !bytes.Equal(again.marshal(), m.marshal()) || again.count != m.count {
			t.Fatalf("round trip: %v", err)
		}
	})
}
