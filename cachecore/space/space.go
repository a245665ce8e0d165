// Package space keeps the cache's books: one ledger of the bytes the
// data files take (used), the bytes promised to writes in progress
// (reserved) and the bytes being evicted now (freeing), against a limit
// and two watermarks; and the least-recently-used list of what may be
// evicted. Both ways of making room share it: the synchronous eviction of
// a write that needs room (Reserve) and the background pruner (Prune),
// so that bytes one of them is freeing count for the other.
//
// It does no I/O: eviction itself (index, files) is its owner's, handed
// in as a function and called with no lock held. Its lock is a leaf: the
// owner may hold its own locks (an image's) when it calls in.
package space

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/imgcache/imgcache/cachecore/space/lru"
)

// ErrNoRoom: nothing more can be evicted, and what is promised already
// leaves no room for the write.
var ErrNoRoom = errors.New("no room in the cache: every cached image is open or pinned")

// Usage is a snapshot of the books.
type Usage struct {
	Used      int64 // allocated bytes of the data files
	Reserved  int64 // bytes promised to writes in progress
	Freeing   int64 // bytes being evicted now
	Index     int64 // allocated bytes of the index, as last measured
	Evictable int64 // bytes of the entries that may be evicted now
	Limit     int64
	High, Low int64 // the watermarks, in bytes
}

// Ledger holds the books of one cache. V is what the owner evicts (an
// image), keyed by a string.
type Ledger[V any] struct {
	// read only after New
	limit, high, low int64

	index atomic.Int64 // allocated bytes of the index, as last measured

	mu sync.Mutex // protects the following; a leaf lock
	// INVARIANT: used, reserved and freeing are >= 0.
	// INVARIANT: evictable.Size() <= used (each entry's size is part of used).
	used      int64
	reserved  int64
	freeing   int64
	freed     sync.Cond // on mu: signalled when an eviction ends
	evictable *lru.List[string, V]
}

// New returns empty books for a limit of limit bytes, with the pruner's
// watermarks at high and low (fractions of the limit).
func New[V any](limit int64, high, low float64) *Ledger[V] {
	l := &Ledger[V]{
		limit:     limit,
		high:      int64(float64(limit) * high),
		low:       int64(float64(limit) * low),
		evictable: lru.New[string, V](),
	}
	l.freed.L = &l.mu
	return l
}

// Low is the low watermark in bytes: what Prune brings usage down to.
func (l *Ledger[V]) Low() int64 { return l.low }

// SetIndex records a measure of the index, which counts against the limit.
func (l *Ledger[V]) SetIndex(n int64) { l.index.Store(n) }

// OverHigh reports whether usage (with the reservations) passes the high
// watermark: the pruner should run.
func (l *Ledger[V]) OverHigh() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.overHighLocked()
}

func (l *Ledger[V]) overHighLocked() bool {
	return l.used+l.reserved+l.index.Load() > l.high
}

// Reserve promises n bytes to a write, evicting least recently used
// entries (through evict, synchronously) until they fit under the limit.
// Writes that need room at the same time share the evictions: bytes
// being freed by one count for the others, which wait for them rather
// than evict more. It fails with ErrNoRoom when nothing more can be
// evicted. overHigh says that usage passed the high watermark (kick the
// pruner).
func (l *Ledger[V]) Reserve(n int64, evict func([]V)) (overHigh bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		over := l.used + l.reserved + n + l.index.Load() - l.limit
		if over <= 0 {
			l.reserved += n
			return l.overHighLocked(), nil
		}
		if over <= l.freeing {
			l.freed.Wait()
			continue
		}
		if !l.evictLocked(over-l.freeing, -1, evict) {
			if l.freeing > 0 {
				l.freed.Wait()
				continue
			}
			return false, ErrNoRoom
		}
	}
}

// Prune evicts least recently used entries, at most batch at a time,
// until usage (without the reservations of writes in flight, which are
// short-lived and leave room for themselves) is at most target, nothing
// more may be evicted, or stop says so.
func (l *Ledger[V]) Prune(target int64, batch int, evict func([]V), stop func() bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for !stop() {
		excess := l.used + l.index.Load() - target
		if excess <= 0 || !l.evictLocked(excess, batch, evict) {
			return
		}
	}
}

// evictLocked takes least recently used entries worth at least want
// bytes (at most max of them, if max > 0) off the list and evicts them,
// with l.mu let go meanwhile; their bytes count as freeing until evict
// returns. It reports whether there was anything to evict.
func (l *Ledger[V]) evictLocked(want int64, max int, evict func([]V)) bool {
	var victims []V
	var sum int64
	for want > 0 && (max <= 0 || len(victims) < max) {
		e, ok := l.evictable.RemoveOldest()
		if !ok {
			break
		}
		victims = append(victims, e.Value)
		sum += e.Size
		want -= e.Size
	}
	if len(victims) == 0 {
		return false
	}
	l.freeing += sum
	l.mu.Unlock()
	evict(victims) // it books what it freed (Measured)
	l.mu.Lock()
	l.freeing -= sum
	l.freed.Broadcast()
	return true
}

// Unreserve gives back n reserved bytes that no write used.
func (l *Ledger[V]) Unreserve(n int64) {
	l.mu.Lock()
	l.reserved -= n
	l.mu.Unlock()
}

// Book moves n reserved bytes to used: a write that may have allocated
// them is done.
func (l *Ledger[V]) Book(n int64) {
	l.mu.Lock()
	l.used += n
	l.reserved -= n
	l.mu.Unlock()
}

// Measured changes used by delta: a file was measured (or deleted) and
// its books differ from the measure by delta.
func (l *Ledger[V]) Measured(delta int64) {
	l.mu.Lock()
	l.used += delta
	l.mu.Unlock()
}

// Load sets used at start-up, with the evictable entries, newest first.
func (l *Ledger[V]) Load(used int64, keys []string, values []V, sizes []int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.used = used
	for i, k := range keys {
		l.evictable.PushOldest(k, values[i], sizes[i])
	}
}

// Evictable makes key the most recently used of the entries that may be
// evicted, size bytes of them.
func (l *Ledger[V]) Evictable(key string, v V, size int64) {
	l.mu.Lock()
	l.evictable.Touch(key, v, size)
	l.mu.Unlock()
}

// Keep takes key off the list of what may be evicted (it is in use or
// pinned, or gone).
func (l *Ledger[V]) Keep(key string) {
	l.mu.Lock()
	l.evictable.Remove(key)
	l.mu.Unlock()
}

// Oldest lists the evictable entries, least recently used first.
func (l *Ledger[V]) Oldest() []V {
	l.mu.Lock()
	defer l.mu.Unlock()
	var vs []V
	for _, e := range l.evictable.Entries() {
		vs = append(vs, e.Value)
	}
	return vs
}

// Usage returns a snapshot of the books.
func (l *Ledger[V]) Usage() Usage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Usage{Used: l.used, Reserved: l.reserved, Freeing: l.freeing, Index: l.index.Load(),
		Evictable: l.evictable.Size(), Limit: l.limit, High: l.high, Low: l.low}
}

// CheckInvariants verifies the books' invariants (tests call it).
func (l *Ledger[V]) CheckInvariants() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.used < 0 || l.reserved < 0 || l.freeing < 0:
		return fmt.Errorf("space: negative books: used %d, reserved %d, freeing %d", l.used, l.reserved, l.freeing)
	case l.evictable.Size() > l.used:
		return fmt.Errorf("space: %d bytes evictable, more than the %d used", l.evictable.Size(), l.used)
	}
	return nil
}
