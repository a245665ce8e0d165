package httpdir

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// TestForEachLimit: every item is called once, never more than limit at
// a time.
func TestForEachLimit(t *testing.T) {
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	var running, most atomic.Int32
	var mu sync.Mutex
	seen := map[int]int{}
	err := forEach(t.Context(), 3, items, func(ctx context.Context, i int) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(items) || most.Load() > 3 {
		t.Fatalf("%d items called of %d, at most %d at once (limit 3)", len(seen), len(items), most.Load())
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("item %d called %d times", i, n)
		}
	}
}

// TestForEachFirstError: the first error is returned, the calls running
// are cancelled, and no call starts after it.
func TestForEachFirstError(t *testing.T) {
	boom := errors.New("boom")
	items := make([]int, 50)
	for i := range items {
		items[i] = i
	}
	var calls atomic.Int32
	second := make(chan struct{})
	err := forEach(t.Context(), 2, items, func(ctx context.Context, i int) error {
		calls.Add(1)
		switch i {
		case 0:
			<-second // both slots taken: item 2 waits for this one's
			return boom
		case 1:
			close(second)
		}
		<-ctx.Done() // the others wait for the cancellation
		return ctx.Err()
	})
	if !errors.Is(err, boom) {
		t.Fatalf("forEach = %v, want the first error", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls; want the two started before the first error, none after", n)
	}
}

// TestForEachCancelled: a cancelled context starts nothing and returns
// its cause.
func TestForEachCancelled(t *testing.T) {
	stop := errors.New("stop")
	ctx, cancel := context.WithCancelCause(t.Context())
	cancel(stop)
	called := false
	err := forEach(ctx, 2, []int{1, 2, 3}, func(context.Context, int) error { called = true; return nil })
	if !errors.Is(err, stop) || called {
		t.Fatalf("forEach on a cancelled context = %v, called %v; want its cause and no call", err, called)
	}
}
