// Package lru is a least-recently-used list of keys with sizes, in the
// manner of groupcache's lru: a map for lookup and a list for order,
// nothing more. It does no I/O and takes no locks: the owner serializes
// calls, and eviction returns the entries it removed so that the owner can
// delete their files after letting go of its own lock. (Not
// hashicorp/golang-lru: it bounds the number of entries, not their bytes,
// and takes a lock of its own under the ledger's.)
package lru

import "container/list"

// Entry is one key of the list with its value and size.
type Entry[K comparable, V any] struct {
	Key   K
	Value V
	Size  int64
}

// List orders keys from most to least recently used. The zero value is not
// usable; call New.
type List[K comparable, V any] struct {
	// INVARIANT: order and items hold the same keys, each once.
	// INVARIANT: every element of order is a *Entry[K, V] with Size >= 0.
	// INVARIANT: size is the sum of the Size of every entry.
	order *list.List          // front: most recently used
	items map[K]*list.Element // key -> its element of order
	size  int64
}

// New returns an empty list.
func New[K comparable, V any]() *List[K, V] {
	return &List[K, V]{order: list.New(), items: make(map[K]*list.Element)}
}

// Touch makes key the most recently used, adding it if absent, and sets
// its value and size (a negative size counts as 0).
func (l *List[K, V]) Touch(key K, value V, size int64) {
	size = max(size, 0)
	if el, ok := l.items[key]; ok {
		e := el.Value.(*Entry[K, V])
		l.size += size - e.Size
		e.Value, e.Size = value, size
		l.order.MoveToFront(el)
		return
	}
	l.items[key] = l.order.PushFront(&Entry[K, V]{Key: key, Value: value, Size: size})
	l.size += size
}

// PushOldest adds key as the least recently used (for loading a list in
// order of age, newest first); a key already present is left where it is.
func (l *List[K, V]) PushOldest(key K, value V, size int64) {
	if _, ok := l.items[key]; ok {
		return
	}
	size = max(size, 0)
	l.items[key] = l.order.PushBack(&Entry[K, V]{Key: key, Value: value, Size: size})
	l.size += size
}

// Remove drops key; it reports whether it was there.
func (l *List[K, V]) Remove(key K) bool {
	el, ok := l.items[key]
	if !ok {
		return false
	}
	l.removeElement(el)
	return true
}

// Contains reports whether key is in the list.
func (l *List[K, V]) Contains(key K) bool {
	_, ok := l.items[key]
	return ok
}

// RemoveOldest drops the least recently used entry and returns it.
func (l *List[K, V]) RemoveOldest() (Entry[K, V], bool) {
	el := l.order.Back()
	if el == nil {
		return Entry[K, V]{}, false
	}
	return l.removeElement(el), true
}

// Evict drops least recently used entries until their sizes add up to at
// least want, or the list is empty, and returns them, oldest first.
func (l *List[K, V]) Evict(want int64) []Entry[K, V] {
	var out []Entry[K, V]
	var freed int64
	for freed < want {
		e, ok := l.RemoveOldest()
		if !ok {
			break
		}
		out = append(out, e)
		freed += e.Size
	}
	return out
}

// Len is the number of entries.
func (l *List[K, V]) Len() int { return l.order.Len() }

// Size is the sum of the entries' sizes.
func (l *List[K, V]) Size() int64 { return l.size }

// Keys lists the keys from least to most recently used.
func (l *List[K, V]) Keys() []K {
	keys := make([]K, 0, l.order.Len())
	for el := l.order.Back(); el != nil; el = el.Prev() {
		keys = append(keys, el.Value.(*Entry[K, V]).Key)
	}
	return keys
}

// Entries lists the entries from least to most recently used.
func (l *List[K, V]) Entries() []Entry[K, V] {
	es := make([]Entry[K, V], 0, l.order.Len())
	for el := l.order.Back(); el != nil; el = el.Prev() {
		es = append(es, *el.Value.(*Entry[K, V]))
	}
	return es
}

func (l *List[K, V]) removeElement(el *list.Element) Entry[K, V] {
	e := l.order.Remove(el).(*Entry[K, V])
	delete(l.items, e.Key)
	l.size -= e.Size
	return *e
}
