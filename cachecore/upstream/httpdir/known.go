package httpdir

import (
	"sync"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// known remembers what HEAD said about the files of HTML listings (which
// give no sizes), so that a crawl does not ask about a file again while
// nothing says it changed. Each refresh of every mount would otherwise
// send a HEAD per image, which a caching tier in front of the origin turns
// into a GET of the image's first slice.
//
// A remembered file is asked about again when its listing row (the text
// beside its link, where nginx and Apache show its date and size) differs
// from the one it was remembered with, when a range reply showed that its
// version changed (forget), or when it leaves the listing. Entries the
// cache already had in its index (Remember) are taken as they are until
// the first crawl ends: their row is the one of that crawl. They are
// looked up in the cache's catalog as the crawl meets them, not copied
// (a million of them). So an image replaced upstream is noticed by the
// next crawl if its row changes (a new date to the minute), else by the
// validators of its next range reply.
type known struct {
	mu         sync.Mutex // protects the following
	m          map[string]knownFile
	remembered upstream.Known    // the cache's catalog at start, until the first crawl ends; nil after
	epoch      uint64            // counts forget calls
	forgot     map[string]uint64 // epoch of each forget not yet seen by a finished crawl
}

type knownFile struct {
	entry upstream.Entry // Size, ETag and ModTime; no Digest (SHA256SUMS are read each crawl)
	row   string         // "" until the file is seen in a listing
}

// lookup returns the remembered entry of a file listed with row.
func (k *known) lookup(name, row string) (upstream.Entry, bool) {
	k.mu.Lock()
	f, ok := k.m[name]
	remembered := k.remembered
	if _, forgotten := k.forgot[name]; forgotten {
		remembered = nil
	}
	k.mu.Unlock()
	if !ok && remembered != nil {
		e, ok := remembered.Entry(name)
		e.Digest, e.Content = "", nil // SHA256SUMS are read each crawl
		return e, ok
	}
	if !ok || f.row != "" && f.row != row {
		return upstream.Entry{}, false
	}
	return f.entry, true
}

// count is how many entries the cache remembered, if it says (a crawl's
// first guess of how many it will find).
func (k *known) count() (int, bool) {
	k.mu.Lock()
	r := k.remembered
	k.mu.Unlock()
	if n, ok := r.(interface{ Len() int }); ok {
		return n.Len(), true
	}
	return 0, false
}

// begin marks the start of a crawl, for replace.
func (k *known) begin() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.epoch
}

// replace makes the files of the crawl that began at since what is
// remembered, except the ones forgotten while it ran: what it found out
// about them may be older than the reply that showed them changed.
func (k *known) replace(c *crawled, since uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m := make(map[string]knownFile)
	for i := range c.entries {
		if f := c.file(i); f.row != "" && f.sized && !f.gone && k.forgot[f.entry.Name] <= since {
			e := *f.entry
			e.Digest = ""
			m[e.Name] = knownFile{entry: e, row: f.row}
		}
	}
	k.m = m
	k.remembered = nil
	for name, at := range k.forgot {
		if at <= since {
			delete(k.forgot, name)
		}
	}
}

// forget drops a file whose range reply showed a new version.
func (k *known) forget(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, name)
	if k.forgot == nil {
		k.forgot = make(map[string]uint64)
	}
	k.epoch++
	k.forgot[name] = k.epoch
}

// Remember takes the entries the cache already knows (from its index, at
// start) as current, so that the first crawl after a restart asks about
// none of them. Files remembered from a crawl keep what the crawl said.
func (u *Upstream) Remember(known upstream.Known) {
	u.known.mu.Lock()
	defer u.known.mu.Unlock()
	u.known.remembered = known
}
