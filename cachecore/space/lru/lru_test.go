package lru

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// checkInvariants panics if an INVARIANT of List does not hold.
func (l *List[K, V]) checkInvariants() {
	if l.order.Len() != len(l.items) {
		panic(fmt.Sprintf("order has %d elements, items %d", l.order.Len(), len(l.items)))
	}
	var sum int64
	for el := l.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*Entry[K, V])
		if l.items[e.Key] != el {
			panic(fmt.Sprintf("key %v: items does not point at its element", e.Key))
		}
		if e.Size < 0 {
			panic(fmt.Sprintf("key %v: negative size %d", e.Key, e.Size))
		}
		sum += e.Size
	}
	if sum != l.size {
		panic(fmt.Sprintf("size %d, entries add up to %d", l.size, sum))
	}
}

func TestOrderAndEvict(t *testing.T) {
	l := New[string, int]()
	for i, k := range []string{"a", "b", "c", "d"} {
		l.Touch(k, i, 10)
		l.checkInvariants()
	}
	l.Touch("a", 0, 15) // a is now the newest, and bigger
	l.checkInvariants()
	if got, want := l.Keys(), []string{"b", "c", "d", "a"}; !slices.Equal(got, want) {
		t.Fatalf("keys oldest first = %v, want %v", got, want)
	}
	if l.Size() != 45 {
		t.Fatalf("size %d, want 45", l.Size())
	}
	ev := l.Evict(15)
	l.checkInvariants()
	if len(ev) != 2 || ev[0].Key != "b" || ev[1].Key != "c" || ev[0].Value != 1 {
		t.Fatalf("Evict(15) = %+v, want b then c", ev)
	}
	if l.Size() != 25 || l.Len() != 2 {
		t.Fatalf("after evict: size %d len %d", l.Size(), l.Len())
	}
	if !l.Remove("d") || l.Remove("d") || l.Contains("d") {
		t.Fatal("Remove of d: want true once, then false")
	}
	l.checkInvariants()
	if ev := l.Evict(1000); len(ev) != 1 || ev[0].Key != "a" {
		t.Fatalf("Evict more than there is = %+v, want [a]", ev)
	}
	if _, ok := l.RemoveOldest(); ok || l.Size() != 0 {
		t.Fatal("empty list gave an entry")
	}
	l.checkInvariants()
}

func TestPushOldest(t *testing.T) {
	l := New[int, struct{}]()
	l.PushOldest(3, struct{}{}, 1) // loading newest first
	l.PushOldest(2, struct{}{}, 1)
	l.PushOldest(1, struct{}{}, -5) // negative sizes count as 0
	l.PushOldest(2, struct{}{}, 100)
	l.checkInvariants()
	if got := l.Keys(); !slices.Equal(got, []int{1, 2, 3}) || l.Size() != 2 {
		t.Fatalf("keys %v size %d, want [1 2 3] and 2", got, l.Size())
	}
}

// TestRandomOps checks the invariants and the order against a simple model
// (a slice, oldest first) over many random operations.
func TestRandomOps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	l := New[int, int]()
	var model []int
	sizes := map[int]int64{}
	for range 20000 {
		k := r.IntN(50)
		switch op := r.IntN(10); {
		case op < 6:
			s := r.Int64N(100)
			l.Touch(k, k, s)
			model = slices.DeleteFunc(model, func(x int) bool { return x == k })
			model = append(model, k)
			sizes[k] = s
		case op < 8:
			got := l.Remove(k)
			want := slices.Contains(model, k)
			if got != want {
				t.Fatalf("Remove(%d) = %v, want %v", k, got, want)
			}
			model = slices.DeleteFunc(model, func(x int) bool { return x == k })
		default:
			want := r.Int64N(150)
			ev := l.Evict(want)
			var freed int64
			for i, e := range ev {
				if e.Key != model[i] {
					t.Fatalf("evicted %d, model's oldest is %d", e.Key, model[i])
				}
				freed += sizes[e.Key]
			}
			model = model[len(ev):]
			if freed < want && len(model) > 0 {
				t.Fatalf("Evict(%d) freed %d and stopped with %d left", want, freed, len(model))
			}
		}
		l.checkInvariants()
		if !slices.Equal(l.Keys(), model) {
			t.Fatalf("order %v, model %v", l.Keys(), model)
		}
	}
}

func BenchmarkTouch(b *testing.B) {
	l := New[int, int]()
	for i := range b.N {
		l.Touch(i%100000, i, 1)
	}
}
