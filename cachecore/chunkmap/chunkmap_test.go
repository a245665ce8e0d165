package chunkmap

import (
	"math/rand/v2"
	"testing"
)

func TestChunkMap(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 65, 200, 1000} {
		m := New(n)
		ref := make([]bool, n)
		r := rand.New(rand.NewPCG(uint64(n), 1))
		for range n * 2 {
			if n == 0 {
				break
			}
			i := r.IntN(n)
			if m.Set(i) == ref[i] {
				t.Fatalf("n=%d set(%d) reported wrong previous state", n, i)
			}
			ref[i] = true
			if err := m.CheckInvariants(); err != nil {
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
			if got := m.NextMissing(from, to); got != want {
				t.Fatalf("n=%d nextMissing(%d,%d)=%d want %d", n, from, to, got, want)
			}
		}
		back, err := Unmarshal(m.Marshal(), n)
		if err != nil || back.count != m.count || back.CheckInvariants() != nil {
			t.Fatalf("n=%d round trip: %v", n, err)
		}
		for i := range n {
			if back.Has(i) != ref[i] {
				t.Fatalf("n=%d round trip lost chunk %d", n, i)
			}
		}
		if n > 0 && m.Complete() != (m.count == n) {
			t.Fatal("complete")
		}
	}
}

func TestChunkMapRejectsForeignBytes(t *testing.T) {
	m := New(70)
	m.Set(69)
	if _, err := Unmarshal(m.Marshal(), 71); err == nil {
		t.Fatal("map of another size accepted")
	}
	b := m.Marshal()
	b[len(b)-1] |= 0x80 // a bit past the last chunk
	if _, err := Unmarshal(b, 70); err == nil {
		t.Fatal("bit past the end accepted")
	}
	if _, err := Unmarshal([]byte{1, 2}, 70); err == nil {
		t.Fatal("short map accepted")
	}
}
