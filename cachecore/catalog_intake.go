package cachecore

import (
	"slices"
	"strings"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Catalog intake: a listing becomes images. Entries with the same ID are
// one image: ByDigest entries (IDs of the digest alone) under several
// names, like hard links: one record, data file, inode, LRU entry, pin
// and hit counter. The facts of the first name in byte order are the
// image's (size, times, Attrs), so that the choice does not depend on
// the listing's order. Entries with Content are stored whole before the
// new tree is published (catalog_content.go).

// intake is one image of a listing: the entries of one ID.
type intake struct {
	key     imageKey
	first   int32     // the entry of the first name: its facts are the image's
	content int32     // an entry with Content, -1 if none
	other   *[]string // the other names, sorted; nil for most images, which have one
}

// links are the image's other names, sorted.
func (g *intake) links() []string {
	if g.other == nil {
		return nil
	}
	return *g.other
}

// id is the image's ID.
func (g *intake) id() string { return g.key.hex() }

// group gathers a listing's entries into images, one per ID. Entries of
// one digest that disagree on its size cannot all be its bytes: the size
// of the image the catalog has already wins, else the first name's, and
// the entries of another size are refused.
func (c *Cache) group(entries []upstream.Entry) []intake {
	of := make([]int32, len(entries))
	in := make([]intake, 0, len(entries))
	ids := intakeIDs{sorted: slices.IsSortedFunc(entries, func(a, b upstream.Entry) int { return strings.Compare(a.Name, b.Name) })}
	k := keyer{source: c.up.URL("")}
	for i := range entries {
		e := &entries[i]
		key := k.key(e)
		g, ok := ids.find(key, e, in)
		if !ok {
			g = int32(len(in))
			ids.add(key, e, g)
			in = append(in, intake{key: key, first: int32(i), content: -1})
		} else if e.Name < entries[in[g].first].Name {
			in[g].first = int32(i)
		}
		of[i] = g
	}
	c.settleSizes(entries, in, of)
	refused := 0
	for i := range entries {
		g, e := &in[of[i]], &entries[i]
		first := &entries[g.first]
		if e.Size != first.Size {
			if refused++; refused <= refusalsLogged {
				c.log.Warn("catalog entry refused: its digest names another size", "upstream", c.up.URL(""),
					"entry", e.Name, "size", e.Size, "digest", e.Digest, "as", first.Name, "size_there", first.Size)
			}
			continue
		}
		if e.Content != nil && g.content < 0 {
			g.content = int32(i)
		}
		if int32(i) != g.first && e.Name != first.Name {
			if g.other == nil {
				g.other = new([]string)
			}
			*g.other = append(*g.other, e.Name)
		}
	}
	for i := range in {
		if l := in[i].other; l != nil && len(*l) > 1 {
			slices.Sort(*l)
			*l = slices.Compact(*l)
		}
	}
	return in
}

// settleSizes makes the first entry of an image whose entries disagree on
// its size the first name of the size that wins (see group).
func (c *Cache) settleSizes(entries []upstream.Entry, in []intake, of []int32) {
	want := map[int32]int64{} // images whose entries disagree: the size that wins
	for i := range entries {
		if g := of[i]; entries[i].Size != entries[in[g].first].Size {
			want[g] = entries[in[g].first].Size
		}
	}
	if len(want) == 0 {
		return
	}
	c.mu.Lock()
	for g := range want {
		if img := c.imageOfKeyLocked(&in[g].key); img != nil {
			want[g] = img.entry.Size
		}
	}
	c.mu.Unlock()
	firsts := map[int32]int32{}
	for i := range entries {
		g := of[i]
		size, ok := want[g]
		if f, has := firsts[g]; ok && entries[i].Size == size && (!has || entries[i].Name < entries[f].Name) {
			firsts[g] = int32(i)
		}
	}
	for g, f := range firsts { // none: the image's size is no entry's, and the first name's stays
		in[g].first = f
	}
}

// record is the index record of a new image of the catalog, with id its
// ID (g.id(); "" where it is not wanted, since a refresh of a million
// images compares a million records).
func (c *Cache) record(g *intake, entries []upstream.Entry, id string) index.Record {
	e := &entries[g.first]
	r := index.Record{ID: id, Name: e.Name, Size: e.Size, ModTime: e.ModTime, ETag: e.ETag,
		Digest: e.Digest, ChunkSize: c.cfg.ChunkSize, Listed: true, Added: c.now(),
		ByDigest: e.ByDigest, Content: g.content >= 0}
	r.SetExtras(index.Extra{Links: g.links(), Attrs: index.AttrsOf(e.Attrs)})
	return r
}

// newListed makes the image of a new ID of a listing; its Content, if it
// has any, was stored as s (nil: none).
func (c *Cache) newListed(r index.Record, s *stored) *Image {
	present := chunkmap.New(chunkmap.Chunks(r.Size, r.ChunkSize))
	if s != nil {
		for i := range present.Len() {
			present.Set(i)
		}
		r.Verdict = index.Verified
	}
	img := newImage(c, r, present)
	if s != nil {
		img.life.alloc = s.alloc // on the books since it was stored
		img.rest.checked, img.rest.stamp = true, s.stamp
	}
	return img
}

// update brings an image of the catalog in line with its entries in a
// new listing: its names, attributes, Content mark, and it is no longer
// retired. c.mu is held; these record fields change only with c.mu and
// img.mu held, so that buildTree may read them under c.mu alone. It
// reports whether what stat shows of its names changed (its names, so
// link counts, or its date: the kernel is told), and whether its place
// in the catalog's tree did (its names, or it was retired).
func (c *Cache) update(img *Image, g *intake, entries []upstream.Entry) (renamed, moved bool) {
	e := &entries[g.first]
	attrs := index.AttrsOf(e.Attrs)
	img.mu.Lock()
	defer img.mu.Unlock()
	r, x := &img.rec, img.rec.Extras()
	renamed = r.Name != e.Name || !slices.Equal(x.Links, g.links())
	moved = renamed || !x.RetiredAt.IsZero()
	content := r.Content || g.content >= 0
	etag, mtime := e.ETag, e.ModTime
	if content {
		// A catalog file is never fetched: its ETag serves only the
		// conditional request after a restart (remembered), and the
		// upstream may give one only once the file is no longer new.
		etag, mtime = r.ETag, r.ModTime
		if g.content >= 0 {
			etag = entries[g.content].ETag
		}
	}
	if cur := img.fetchEntry(); !content && (cur.Name != e.Name || cur.ETag != etag || !cur.ModTime.Equal(mtime)) {
		// The same bytes (same digest) renamed or published again: ask
		// for them as listed now (Image.fetchAs).
		next := cur
		next.Name, next.ETag, next.ModTime = e.Name, etag, mtime
		img.fetchAs.Store(&next)
		renamed = renamed || !cur.ModTime.Equal(mtime)
	}
	if !renamed && x.Attrs == attrs && r.Content == content && x.RetiredAt.IsZero() && r.ETag == etag && r.ModTime.Equal(mtime) {
		return false, false
	}
	r.Name, r.Content, r.ETag, r.ModTime = e.Name, content, etag, mtime
	r.SetExtras(index.Extra{Links: g.links(), Attrs: attrs}) // and no longer retired: listed again
	if content {
		c.life.space.Keep(img.id) // a catalog file is never evicted
	}
	img.dirty = true
	return renamed, moved
}

// names are the image's names in the catalog: its record's name and
// links. c.mu or img.mu is held (update).
func (img *Image) names() []string {
	return append([]string{img.rec.Name}, img.rec.Extras().Links...)
}

// intakeIDs finds the intake of an ID seen before in a listing. Only
// entries named by digest share an ID under different names; the others'
// IDs hold their names, so in a listing sorted by name (a crawl's) such
// an entry can share its ID only with one of the same name, among the
// last intakes made. Those few are mapped, the rest not: a map of a
// million IDs was a tenth of the daemon's peak at a refresh of a million
// images. A listing in another order maps every ID.
type intakeIDs struct {
	sorted   bool
	byDigest map[imageKey]int32 // ByDigest entries, or every entry if not sorted
	run      int32              // in a sorted listing, the first intake of the last name seen
	runName  string
}

func (s *intakeIDs) find(key imageKey, e *upstream.Entry, in []intake) (int32, bool) {
	if !s.sorted || e.ByDigest {
		g, ok := s.byDigest[key]
		return g, ok
	}
	if e.Name != s.runName {
		return 0, false
	}
	for g := s.run; g < int32(len(in)); g++ {
		if in[g].key == key {
			return g, true
		}
	}
	return 0, false
}

func (s *intakeIDs) add(key imageKey, e *upstream.Entry, g int32) {
	if !s.sorted || e.ByDigest {
		if s.byDigest == nil {
			s.byDigest = make(map[imageKey]int32)
		}
		s.byDigest[key] = g
		return
	}
	if e.Name != s.runName {
		s.run, s.runName = g, e.Name
	}
}
