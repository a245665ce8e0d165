package cachecore

import (
	"math/rand/v2"
	"testing"
)

func TestChunkMap(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 200, 1000} {
		m := newChunkMap(n)
		ref := make([]bool, n)
		r := rand.New(rand.NewPCG(uint64(n), 1))
		for range n * 2 {
			if n == 0 {
				break
			}
			i := r.IntN(n)
			if m.set(i) == ref[i] {
				t.Fatalf("n=%d set(%d) reported wrong previous state", n, i)
			}
			ref[i] = true
			if err := m.checkInvariants(); err != nil {
				t.Fatal(err)
			}
			from, to := r.IntN(n+1), r.IntN(n+1)
			if from > to {
				from, to = to, from
			}
			want := to
			for k := from; k < to; k++ {
				if !ref[k] {
					want = k
					break
				}
			}
			if got := m.nextMissing(from, to); got != want {
				t.Fatalf("n=%d nextMissing(%d,%d)=%d want %d", n, from, to, got, want)
			}
		}
		back, err := unmarshalChunkMap(m.marshal(), n)
		if err != nil || back.count != m.count || back.checkInvariants() != nil {
			t.Fatalf("n=%d round trip: %v", n, err)
		}
		for i := range n {
			if back.has(i) != ref[i] {
				t.Fatalf("n=%d round trip lost chunk %d", n, i)
			}
		}
		if n > 0 && m.complete() != (m.count == n) {
			t.Fatal("complete")
		}
	}
}

func TestChunkMapRejectsForeignBytes(t *testing.T) {
	m := newChunkMap(70)
	m.set(69)
	if _, err := unmarshalChunkMap(m.marshal(), 71); err == nil {
		t.Fatal("map of another size accepted")
	}
	b := m.marshal()
	b[len(b)-1] |= 0x80 // a bit past the last chunk
	if _, err := unmarshalChunkMap(b, 70); err == nil {
		t.Fatal("bit past the end accepted")
	}
	if _, err := unmarshalChunkMap([]byte{1, 2}, 70); err == nil {
		t.Fatal("short map accepted")
	}
}
