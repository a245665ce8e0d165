package cachecore

import (
	"context"
	"testing"
	"time"
)

// TestFetchSlotsShare: one image holds at most half the slots (rounded
// up); another image takes the rest; tryAcquire leaves the spare asked
// for; a release wakes who watches released; a waiter whose context ends
// leaves nothing behind.
func TestFetchSlotsShare(t *testing.T) {
	s := newFetchSlots(5)
	a, b := &Image{}, &Image{}
	ctx := context.Background()
	for range 3 {
		if err := s.acquire(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if s.tryAcquire(a, 0) {
		t.Fatal("an image took a fourth of five slots")
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := s.acquire(short, a); err == nil {
		t.Fatal("an image waited past its share")
	}
	if s.tryAcquire(b, 2) {
		t.Fatal("tryAcquire left fewer spare slots than asked")
	}
	if !s.tryAcquire(b, 1) {
		t.Fatal("another image could not take a free slot")
	}
	if s.tryAcquire(b, 1) {
		t.Fatal("tryAcquire took the last free slot, asked to leave one")
	}
	if !s.tryAcquire(b, 0) {
		t.Fatal("the last free slot could not be taken")
	}
	if s.tryAcquire(b, 0) {
		t.Fatal("a sixth slot of five")
	}
	freed := s.released()
	s.release(a)
	select {
	case <-freed:
	default:
		t.Fatal("a release did not close released()")
	}
	if !s.tryAcquire(b, 0) {
		t.Fatal("a released slot could not be taken")
	}
	for range 2 {
		s.release(a)
	}
	for range 3 {
		s.release(b)
	}
	one := newFetchSlots(1) // with one slot there is none to spare
	if !one.tryAcquire(a, 1) {
		t.Fatal("the only slot could not be taken")
	}
	s.mu.Lock()
	left := len(s.images)
	s.mu.Unlock()
	if left != 0 || !s.all.TryAcquire(5) {
		t.Fatalf("after every release: %d images tracked, or slots missing", left)
	}
}
