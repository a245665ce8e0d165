package upstream

import "iter"

// Rememberer is an Upstream that can spare requests when it is told the
// entries the cache already holds (from its index, at start): its List
// may then take their versions as current until a listing or a reply
// says otherwise, instead of asking about each again.
type Rememberer interface {
	Remember(known Known)
}

// Known is the catalog a cache holds, as the upstream last listed it:
// an entry for each name, with its ETag, attributes and Content. It is
// read in place (a catalog of a million images is not copied for it):
// an upstream looks up the names it meets, or walks the entries once and
// keeps what it needs.
type Known interface {
	// Entry returns the entry called name.
	Entry(name string) (Entry, bool)
	// All yields every entry.
	All() iter.Seq[Entry]
}

// KnownList is a Known of a list of entries (tests, small catalogs).
type KnownList []Entry

func (l KnownList) Entry(name string) (Entry, bool) {
	for _, e := range l {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

func (l KnownList) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		for _, e := range l {
			if !yield(e) {
				return
			}
		}
	}
}
