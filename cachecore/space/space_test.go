package space

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// books is an owner of a ledger: entries of 100 bytes each, evicted by
// booking their bytes off.
type books struct {
	l       *Ledger[string]
	mu      sync.Mutex
	evicted []string
	gate    chan struct{} // if set, evictions wait for it
}

func newBooks(limit int64, n int) *books {
	b := &books{l: New[string](limit, 0.9, 0.5)}
	var ids []string
	var sizes []int64
	for i := range n { // newest first
		ids = append(ids, fmt.Sprint(i))
		sizes = append(sizes, 100)
	}
	b.l.Load(int64(100*n), ids, ids, sizes)
	return b
}

func (b *books) evict(vs []string) {
	if b.gate != nil {
		<-b.gate
	}
	b.mu.Lock()
	b.evicted = append(b.evicted, vs...)
	b.mu.Unlock()
	b.l.Measured(-100 * int64(len(vs)))
}

func TestReserveEvictsOldestFirst(t *testing.T) {
	b := newBooks(1000, 10) // full
	if _, err := b.l.Reserve(150, b.evict); err != nil {
		t.Fatal(err)
	}
	if want := []string{"9", "8"}; !slices.Equal(b.evicted, want) {
		t.Errorf("evicted %v, want the two oldest %v", b.evicted, want)
	}
	if u := b.l.Usage(); u.Used != 800 || u.Reserved != 150 || u.Freeing != 0 {
		t.Errorf("books %+v", u)
	}
	b.l.Book(150)
	if err := b.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestReserveFailsWhenNothingIsEvictable(t *testing.T) {
	b := newBooks(1000, 10)
	for i := range 10 {
		b.l.Keep(fmt.Sprint(i)) // all open or pinned
	}
	if _, err := b.l.Reserve(1, b.evict); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("reserve with nothing evictable: %v, want ErrNoRoom", err)
	}
	if err := b.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

// TestEvictionsShared: a write that needs room while the pruner is
// evicting waits for the bytes being freed instead of evicting more.
func TestEvictionsShared(t *testing.T) {
	b := newBooks(1000, 10)
	b.gate = make(chan struct{})
	pruned := make(chan struct{})
	go func() {
		b.l.Prune(700, 10, b.evict, func() bool { return false })
		close(pruned)
	}()
	for b.l.Usage().Freeing == 0 { // the pruner took its victims
	}
	reserved := make(chan error)
	go func() { _, err := b.l.Reserve(200, b.evict); reserved <- err }()
	close(b.gate)
	<-pruned
	if err := <-reserved; err != nil {
		t.Fatal(err)
	}
	if len(b.evicted) != 3 {
		t.Errorf("evicted %v: want the pruner's three only (its 300 bytes leave room for the write's 200)", b.evicted)
	}
	if err := b.l.CheckInvariants(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckInvariantsCatchesBadBooks(t *testing.T) {
	b := newBooks(1000, 2)
	b.l.Measured(-150) // books lower than the evictable entries
	if b.l.CheckInvariants() == nil {
		t.Error("evictable bytes above the used ones not caught")
	}
	b.l.Unreserve(10)
	if b.l.CheckInvariants() == nil {
		t.Error("negative reservations not caught")
	}
}
