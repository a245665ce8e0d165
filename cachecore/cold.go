package cachecore

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"iter"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Cold images. Most images of a large mirror are listed and never read:
// nothing cached, never opened, not pinned, one name, no attributes. Such
// an image is held as a coldImage (96 bytes and its strings) rather than an Image
// (about a kilobyte with its state), since its index record says all
// there is to say of it, and coldImage.record rebuilds that record
// exactly. The first time anyone needs the image itself (a lookup, a
// pin) an Image is made of it and it is hot (Cache.images) from then on.
// Cold images have no data file and no chunk map: start-up makes an
// image cold only if it has neither.

// coldImage is an image of the catalog nothing has happened to: 96
// bytes and its strings.
type coldImage struct {
	id       imageKey
	name     string
	tags     string // the ETag, then the digest: most images have neither, and one string is 16 bytes less
	size     int64
	mtime    int64 // UnixNano; noTime: the zero time
	added    int64
	chunk    uint32 // the chunk size
	etagLen  uint16 // where in tags the digest starts
	byDigest bool
}

func (ci *coldImage) etag() string   { return ci.tags[:ci.etagLen] }
func (ci *coldImage) digest() string { return ci.tags[ci.etagLen:] }

const noTime = math.MinInt64

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return noTime
	}
	return t.UnixNano()
}

func timeOf(n int64) time.Time {
	if n == noTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// coldOf returns the cold form of r, if r is the record of an image
// nothing has happened to (as a listing makes it) that the cold form
// holds exactly: its record rebuilt is r, field for field. An empty
// image is never cold: it is complete at once (settleEmpty).
func coldOf(r *index.Record) (coldImage, bool) {
	var ci coldImage
	if r.Size == 0 || len(r.ID) != 2*len(ci.id) {
		return ci, false
	}
	if !parseLowerHex(ci.id[:], r.ID) {
		return ci, false
	}
	if r.ChunkSize != int64(uint32(r.ChunkSize)) || len(r.ETag) != int(uint16(len(r.ETag))) {
		return ci, false
	}
	ci.name, ci.byDigest = r.Name, r.ByDigest
	switch {
	case r.Digest == "":
		ci.tags = r.ETag
	case r.ETag == "":
		ci.tags = r.Digest
	default:
		ci.tags = r.ETag + r.Digest
	}
	ci.etagLen = uint16(len(r.ETag))
	ci.size, ci.chunk = r.Size, uint32(r.ChunkSize)
	ci.mtime, ci.added = unixNano(r.ModTime), unixNano(r.Added)
	// r.ID, lowercase, is what ci.hexID would make: compared as it is,
	// a million IDs are not made again.
	return ci, ci.recordOf(r.ID) == utcTimes(*r) // Record stays comparable: a field of another kind would need a look here
}

// utcTimes is r with its times as they read back from the index: in UTC,
// with no monotonic clock reading (a time zone is only its offset there).
func utcTimes(r index.Record) index.Record {
	for _, t := range []*time.Time{&r.ModTime, &r.Added, &r.LastAccess, &r.LastErrorAt, &r.QueuedAt, &r.LastFetch} {
		if !t.IsZero() {
			*t = t.UTC().Round(0)
		}
	}
	return r
}

// record is the image's index record.
func (ci *coldImage) record() index.Record { return ci.recordOf(ci.id.hex()) }

// recordOf is the image's index record, with id its ID's hex form.
func (ci *coldImage) recordOf(id string) index.Record {
	return index.Record{ID: id, Name: ci.name, Size: ci.size, ModTime: timeOf(ci.mtime),
		ETag: ci.etag(), Digest: ci.digest(), ChunkSize: int64(ci.chunk), Listed: true, Added: timeOf(ci.added),
		ByDigest: ci.byDigest}
}

func (ci *coldImage) ino() uint64 { return inoOfID(ci.id) }

// entry is the image as the upstream listed it.
func (ci *coldImage) entry() upstream.Entry {
	return upstream.Entry{Name: ci.name, Size: ci.size, ModTime: timeOf(ci.mtime), ETag: ci.etag(), Digest: ci.digest(),
		ByDigest: ci.byDigest}
}

// info is what Image.Info says of the image, with source as its Source:
// nothing cached.
func (ci *coldImage) info(source string) Info {
	return Info{Name: ci.name, Size: ci.size, ModTime: timeOf(ci.mtime), Digest: ci.digest(),
		Source: source, State: StateAbsent, Links: 1}
}

// coldSet holds the cold images of the catalog. It is not changed once
// made, but for hot: a refresh that changes them makes a new set.
type coldSet struct {
	imgs []coldImage // in catalog order (catalogOrder)
	byID []int32     // indexes of imgs, in ID order
	// hot[i]: an Image was made of imgs[i] (it is in Cache.images, or
	// was and left the catalog). Set with Cache.mu held.
	hot []atomic.Bool
}

// newColdSet makes the set of imgs, which it sorts in catalog order.
// inIDOrder says they come in ID order (as start-up reads them): the
// sort's permutation is then their ID order, found without a sort of
// its own.
func newColdSet(imgs []coldImage, inIDOrder bool) *coldSet {
	s := &coldSet{imgs: imgs, hot: make([]atomic.Bool, len(imgs))}
	var from []int32 // from[i]: where imgs[i] was before the sort
	if !slices.IsSortedFunc(imgs, byCatalogOrder) {
		from = sortCold(imgs)
	}
	switch {
	case inIDOrder && from != nil:
		s.byID = make([]int32, len(imgs))
		for i, j := range from {
			s.byID[j] = int32(i)
		}
	case inIDOrder:
		s.byID = make([]int32, len(imgs))
		for i := range s.byID {
			s.byID[i] = int32(i)
		}
	default:
		s.byID = idOrder(imgs)
	}
	return s
}

// idOrder returns the indexes of imgs in ID order: sorted by the first 8
// bytes of each ID held beside its index (the IDs are hashes: ties are
// rare), the whole ID only on a tie.
func idOrder(imgs []coldImage) []int32 {
	type k struct {
		k0 uint64
		i  int32
	}
	keys := make([]k, len(imgs))
	for i := range imgs {
		keys[i] = k{binary.BigEndian.Uint64(imgs[i].id[:8]), int32(i)}
	}
	slices.SortFunc(keys, func(a, b k) int {
		if c := cmp.Compare(a.k0, b.k0); c != 0 {
			return c
		}
		return bytes.Compare(imgs[a.i].id[:], imgs[b.i].id[:])
	})
	order := make([]int32, len(keys))
	for j := range keys {
		order[j] = keys[j].i
	}
	return order
}

// find returns the index in s.imgs of the image of ID id.
func (s *coldSet) find(id imageKey) (int, bool) {
	j := sort.Search(len(s.byID), func(j int) bool { return bytes.Compare(s.imgs[s.byID[j]].id[:], id[:]) >= 0 })
	if j < len(s.byID) && s.imgs[s.byID[j]].id == id {
		return int(s.byID[j]), true
	}
	return 0, false
}

// cold counts the images of s still cold.
func (s *coldSet) cold() int {
	n := 0
	for i := range s.hot {
		if !s.hot[i].Load() {
			n++
		}
	}
	return n
}

// parseLowerHex decodes s, lowercase hex of len(dst) bytes, into dst.
func parseLowerHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, lo := lowerNibble(s[2*i]), lowerNibble(s[2*i+1])
		if hi|lo > 0xf {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func lowerNibble(c byte) byte { return lowerHexValue[c] }

// lowerHexValue is the value of each lowercase hex digit, 0xff of any
// other byte.
var lowerHexValue = func() (v [256]byte) {
	for i := range v {
		v[i] = 0xff
	}
	for i, c := range []byte("0123456789abcdef") {
		v[c] = byte(i)
	}
	return v
}()

// parseID is the binary form of a hex image ID.
func parseID(id string) ([32]byte, bool) {
	var b [32]byte
	n, err := hex.Decode(b[:], []byte(id))
	return b, err == nil && n == len(b) && len(id) == 2*len(b)
}

// heatLocked returns the Image of cold image i of c.cold, made now if
// it is still cold; nil if it was made and has left the catalog since.
// c.mu is held.
func (c *Cache) heatLocked(i int) *Image {
	ci := &c.cold.imgs[i]
	id := ci.id.hex()
	if c.cold.hot[i].Load() {
		return c.images[id]
	}
	r := ci.record()
	img := newImage(c, r, chunkmap.New(chunkmap.Chunks(r.Size, r.ChunkSize)))
	img.links.Store(1)
	img.seen = c.gen
	c.images[id] = img
	c.cold.hot[i].Store(true)
	return img
}

// imageOfCold returns the Image of a cold image of a tree: nil if the
// image has left the catalog since the tree was made.
func (c *Cache) imageOfCold(ci *coldImage) *Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	if img := c.imageOfKeyLocked(&ci.id); img != nil {
		return img
	}
	i, ok := c.cold.find(ci.id)
	if !ok {
		return nil
	}
	return c.heatLocked(i)
}

// listedColdLocked finds the cold image of intake g of a listing, marks
// it listed and reports whether it stays as it was (ok). Else ci is the
// index in c.cold of the image to make hot, to take the listing's
// changes (its Attrs, other names), or -1 if there is none (a new image;
// stored: its Content was stored as a new image's, which it becomes).
// next is where the last image found was, plus one: a listing mostly
// comes in catalog order, and the image sought is then the one after it,
// found without a search (a million searches by ID, each a score of
// cache misses, held c.mu for seconds). c.mu is held.
func (c *Cache) listedColdLocked(g *intake, entries []upstream.Entry, stored bool, listed []bool, next *int) (ci int, ok bool) {
	id := g.key
	i, found := *next, *next < len(c.cold.imgs) && c.cold.imgs[*next].id == id
	if !found {
		i, found = c.cold.find(id)
	}
	if found {
		*next = i + 1
	}
	if !found || c.cold.hot[i].Load() {
		return -1, false
	}
	listed[i] = true
	if stored {
		c.cold.hot[i].Store(true) // not cold any more; the new image has its ID
		return -1, false
	}
	r := c.record(g, entries, "")
	was := &c.cold.imgs[i]
	r.ChunkSize, r.Added = int64(was.chunk), timeOf(was.added) // an image keeps these
	// The IDs are the same (g.key is was's): left out of the comparison.
	if utcTimes(r) == was.recordOf("") {
		return i, true
	}
	return i, false
}

// next is the cold set that follows s after a listing: its images
// listed (and still cold) and the new ones added (sorted in place, and
// the new set's own if none is kept). The records of those not listed
// are deleted in b: they have nothing else to delete. If nothing changed
// it is s.
func (s *coldSet) next(listed []bool, added []coldImage, b *index.Batch) *coldSet {
	kept, dropped := 0, 0
	for i := range s.imgs {
		switch {
		case s.hot[i].Load():
		case listed[i]:
			kept++
		default:
			b.Deletes = append(b.Deletes, s.imgs[i].id.hex())
			dropped++
		}
	}
	if dropped == 0 && len(added) == 0 {
		return s // those made hot since stay, skipped wherever they show
	}
	sortCold(added)
	if kept == 0 {
		if cap(added) > len(added)+len(added)/8 {
			added = slices.Clone(added) // the set is kept: not its unused room
		}
		return newColdSet(added, false) // a first listing's million: not copied
	}
	imgs := make([]coldImage, 0, kept+len(added))
	j := 0
	for i := range s.imgs {
		if s.hot[i].Load() || !listed[i] {
			continue
		}
		for j < len(added) && catalogOrder(added[j].name, s.imgs[i].name) < 0 {
			imgs = append(imgs, added[j])
			j++
		}
		imgs = append(imgs, s.imgs[i])
	}
	return newColdSet(append(imgs, added[j:]...), false)
}

// catalogOrder orders names as the catalog tree holds them: by
// directory, then by name in it.
func catalogOrder(a, b string) int {
	if c := strings.Compare(parentPath(a), parentPath(b)); c != 0 {
		return c
	}
	return strings.Compare(baseName(a), baseName(b))
}

func byCatalogOrder(a, b coldImage) int { return catalogOrder(a.name, b.name) }

// sortCold sorts imgs in catalog order, and returns where each was
// before (sortByKey).
func sortCold(imgs []coldImage) []int32 {
	dirs := map[string]uint32{}
	for i := range imgs {
		dirs[parentPath(imgs[i].name)] = 0
	}
	names := slices.Sorted(maps.Keys(dirs))
	for r, d := range names {
		dirs[d] = uint32(r)
	}
	return sortByKey(imgs, func(ci *coldImage) (uint32, string) { return dirs[parentPath(ci.name)], baseName(ci.name) })
}

// sortByKey sorts s by key (a number, then a string): by the number and
// the first 16 bytes of the string, held beside each element's index,
// which settle most comparisons without a look at the strings themselves
// (scattered over the heap: a plain sort of a million names took 1.9 s
// here, mostly cache misses), then in place. It returns where each
// element was before: s[i] was at from[i].
func sortByKey[T any](s []T, key func(*T) (uint32, string)) (from []int32) {
	type k struct {
		n      uint32
		i      int32
		k0, k1 uint64
	}
	keys := make([]k, len(s))
	for i := range s {
		n, str := key(&s[i])
		var b [16]byte
		copy(b[:], str)
		keys[i] = k{n, int32(i), binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	}
	slices.SortFunc(keys, func(a, b k) int {
		if c := cmp.Compare(a.n, b.n); c != 0 {
			return c
		}
		if c := cmp.Compare(a.k0, b.k0); c != 0 {
			return c
		}
		if c := cmp.Compare(a.k1, b.k1); c != 0 {
			return c
		}
		_, x := key(&s[a.i])
		_, y := key(&s[b.i])
		return strings.Compare(x, y)
	})
	from = make([]int32, len(keys))
	for i := range keys {
		from[i] = keys[i].i
	}
	// Put each element where it goes, following the cycles of the
	// permutation: no second copy of s.
	for start := range keys {
		if keys[start].i < 0 {
			continue
		}
		tmp := s[start]
		at := start
		for {
			from := int(keys[at].i)
			keys[at].i = -1
			if from == start {
				s[at] = tmp
				break
			}
			s[at] = s[from]
			at = from
		}
	}
	return from
}

// coldRecords yields the records of imgs, made as they are asked for.
func coldRecords(imgs []coldImage) iter.Seq[index.Record] {
	return func(yield func(index.Record) bool) {
		for i := range imgs {
			if !yield(imgs[i].record()) {
				return
			}
		}
	}
}
