package chunkmap

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func BenchmarkChunkMapNextMissing(b *testing.B) {
	m := New(100_000) // a 100 GiB image in 1 MiB chunks
	for i := range m.n - 1 {
		m.Set(i)
	}
	b.ResetTimer()
	for b.Loop() {
		if m.NextMissing(0, m.n) != m.n-1 {
			b.Fatal("wrong")
		}
	}
}

// BenchmarkChunkMapLookup is the question every read asks: is chunk i
// present? (a 100 GiB image in 1 MiB chunks, half present)
func BenchmarkChunkMapLookup(b *testing.B) {
	m := New(100_000)
	for i := 0; i < m.n; i += 2 {
		m.Set(i)
	}
	idx := make([]int, 4096)
	for i := range idx {
		idx[i] = rand.IntN(m.n)
	}
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		if m.Has(idx[i%len(idx)]) {
			n++
		}
	}
	_ = n
}

// FuzzUnmarshalChunkMap: whatever the index holds, a chunk map read from
// it keeps its invariants (or is refused), and one that is kept encodes
// back to what it read.
func FuzzUnmarshalChunkMap(f *testing.F) {
	m := New(130)
	for _, i := range []int{0, 1, 63, 64, 129} {
		m.Set(i)
	}
	f.Add(m.Marshal(), 130)
	empty := New(5)
	f.Add(empty.Marshal(), 5)
	f.Add([]byte{5, 0, 0, 0, 0xff, 0, 0, 0, 0, 0, 0, 0}, 5)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, buf []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		m, err := Unmarshal(buf, n)
		if err != nil {
			return
		}
		if err := m.CheckInvariants(); err != nil {
			t.Fatalf("unmarshalled map breaks its invariants: %v", err)
		}
		if m.n != n {
			t.Fatalf("map of %d chunks, want %d", m.n, n)
		}
		again, err := Unmarshal(m.Marshal(), n)
		if err != nil || !bytes.Equal(again.Marshal(), m.Marshal()) || again.count != m.count {
			t.Fatalf("round trip: %v", err)
		}
	})
}
