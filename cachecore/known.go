package cachecore

import (
	"iter"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// known is the catalog the cache holds, for upstream.Rememberer, so that
// the first listing after a start asks only whether entries changed:
// read in place, a cold image (cold.go) as its coldImage says, a hot one
// as remembered gives it. A catalog of a million images is not copied
// for it (it was, twice, at every start).
type known struct{ c *Cache }

var _ upstream.Known = known{}

func (k known) Entry(name string) (upstream.Entry, bool) {
	ch, ok := k.c.tree.Load().file(name)
	switch {
	case !ok:
		return upstream.Entry{}, false
	case ch.img == nil: // cold, or made hot since with the same facts
		e := ch.cold.entry()
		e.Name = name
		return e, true
	}
	img := ch.img
	img.mu.Lock()
	e, x := img.entry, img.rec.Extras()
	e.Name, e.ETag, e.ModTime, e.Attrs = name, img.rec.ETag, img.rec.ModTime, x.Attrs.Map() // as last listed (update)
	content := img.rec.Content
	img.mu.Unlock()
	if !x.RetiredAt.IsZero() {
		return upstream.Entry{}, false // the upstream no longer lists it
	}
	if content {
		e.Content = k.c.readContent(img)
	}
	return e, true
}

// Len is about how many entries the catalog holds: an upstream's first
// guess of how many a listing will find (httpdir makes room for them at
// once rather than growing a million entries by copies).
func (k known) Len() int {
	k.c.mu.Lock()
	defer k.c.mu.Unlock()
	return len(k.c.images) + len(k.c.cold.imgs)
}

func (k known) All() iter.Seq[upstream.Entry] {
	return func(yield func(upstream.Entry) bool) {
		for _, e := range k.c.remembered() {
			if !yield(e) {
				return
			}
		}
		k.c.mu.Lock()
		cold := k.c.cold
		k.c.mu.Unlock()
		for i := range cold.imgs {
			if !cold.hot[i].Load() && !yield(cold.imgs[i].entry()) {
				return
			}
		}
	}
}
