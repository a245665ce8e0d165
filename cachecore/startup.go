package cachecore

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/store"
)

// openStorage opens the index and the data store and reconciles them:
// records of images that left the catalog are dropped with their data,
// data files without a record are deleted, and a chunk map whose data file
// is gone is emptied. Images nothing has happened to are loaded cold
// (cold.go): a catalog of a million images starts in a few seconds and a
// few hundred MB.
func (c *Cache) openStorage() error {
	var err error
	if c.store, err = store.Open(c.dir); err != nil {
		return err // it names the path
	}
	// The data files first: an image with one is never cold.
	files, err := c.store.Scan(func(name string) {
		c.log.Warn("ignoring a stray entry in the cache directory", "path", filepath.Join(c.cfg.Dir, "data", name))
	})
	if err != nil {
		return err // it names the path
	}
	ld, err := c.openLoadedIndex()
	if errors.Is(err, ErrIndexDamaged) && c.cfg.RebuildIndex {
		if err := c.rebuildIndex(err); err != nil { // rebuild.go
			return err
		}
		if files, err = c.store.Scan(func(string) {}); err != nil {
			return err
		}
		ld, err = c.openLoadedIndex()
	} else if err == nil && c.cfg.RebuildIndex {
		c.log.Info("the index is sound: nothing to rebuild")
	}
	if err != nil {
		return err
	}
	l := ld.Loaded
	c.catalog = l.Catalog
	fix := index.Batch{Deletes: ld.deletes}
	hot := ld.hot
	// An image with a data file or a chunk map of anything is not cold.
	warm := make(map[[32]byte]bool)
	for _, f := range files {
		if id, ok := parseID(f.ID); ok {
			warm[id] = true
		}
	}
	for id := range l.Maps { // written by a flush: the image had something happen
		if id, ok := parseID(id); ok {
			warm[id] = true
		}
	}
	cold := ld.cold
	if len(warm) > 0 {
		kept := cold[:0]
		for i := range cold {
			if warm[cold[i].id] {
				hot = append(hot, cold[i].record())
			} else {
				kept = append(kept, cold[i])
			}
		}
		cold = kept
	}
	for _, r := range hot {
		n := chunkmap.Chunks(r.Size, r.ChunkSize)
		present, err := chunkmap.Unmarshal(l.Maps[r.ID], n)
		if err != nil && l.Maps[r.ID] != nil {
			c.log.Warn("chunk map unreadable; image will be fetched again", "image", r.Name, "err", err)
		}
		if present.Count() > 0 && !c.store.Exists(r.ID) {
			present.Clear()
			r.Verdict = index.Unchecked
			fix.PutMap(r.ID, present.Marshal())
		}
		img := newImage(c, r, present)
		if !r.Extras().RetiredAt.IsZero() && !img.trustedLocked() { // a retired image stays while it is whole
			fix.Deletes = append(fix.Deletes, r.ID)
			continue
		}
		c.images[r.ID] = img
	}
	// Read in ID order, unless a record's ID is not its key's.
	byID := slices.IsSortedFunc(cold, func(a, b coldImage) int { return bytes.Compare(a.id[:], b.id[:]) })
	c.cold = newColdSet(cold, byID)
	gone := make(map[string]bool, len(fix.Deletes))
	for _, id := range fix.Deletes {
		if !store.ValidID(id) {
			continue // no data file has that name
		}
		if err := c.store.Remove(id); err != nil {
			return err
		}
		gone[id] = true
	}
	for _, f := range files {
		if c.images[f.ID] == nil && !gone[f.ID] {
			c.log.Info("removing cache file without index record", "id", f.ID)
			if err := c.store.Remove(f.ID); err != nil {
				return err
			}
		}
	}
	t, unplaced := c.buildTree()
	for _, img := range unplaced { // retired, and its names taken: it leaves the catalog
		delete(c.images, img.id)
		fix.Deletes = append(fix.Deletes, img.id)
		if err := c.store.Remove(img.id); err != nil {
			return err
		}
	}
	if err := c.idx.Write(&fix); err != nil && !errors.Is(err, ErrIndexHeld) { // held: written later
		return fmt.Errorf("write index: %w", err)
	}
	c.tree.Store(t)
	return c.loadPins(l.Pins)
}

// loadedIndex is the index as start-up reads it: its records sorted into
// those to delete, the cold images and the records of the others.
type loadedIndex struct {
	index.Loaded
	deletes []string
	cold    []coldImage // in ID order
	hot     []index.Record
}

// openLoadedIndex opens the index and reads it whole, each record taken
// as it is decoded (index.LoadEach).
func (c *Cache) openLoadedIndex() (loadedIndex, error) {
	idx, err := index.Open(filepath.Join(c.cfg.Dir, "index"), c.log)
	if err != nil {
		return loadedIndex{}, err
	}
	// Cold images are gathered in one slice, each part in a room of its
	// own (IDs are hashes: the parts hold about as many each), and the
	// rooms are then moved together in place: gathered apart and copied
	// into one slice, a million were held twice at the peak of start-up.
	// A part that outgrows its room goes on in blocks (a slice of a
	// million grown by append copied itself over and over), and all are
	// then copied into one slice.
	room := coldRoom(idx.RecordsEstimate())
	whole := make([]coldImage, room*index.LoadParts)
	var rooms [index.LoadParts][]coldImage
	for p := range rooms {
		rooms[p] = whole[p*room : p*room : (p+1)*room]
	}
	var blocks [index.LoadParts][][]coldImage
	var parts [index.LoadParts]loadedIndex
	l, err := idx.LoadEach(func(p int, r *index.Record) error {
		part := &parts[p]
		if !store.ValidID(r.ID) {
			c.log.Warn("dropping an index record with a malformed ID", "id", r.ID, "image", r.Name)
			part.deletes = append(part.deletes, r.ID)
			return nil
		}
		err := checkRecord(r)
		if err != nil {
			c.log.Warn("index record refused; its image and data are dropped", "err", err)
		}
		if !r.Listed || err != nil {
			part.deletes = append(part.deletes, r.ID)
			return nil
		}
		ci, ok := coldOf(r)
		b := &blocks[p]
		switch {
		case !ok:
			part.hot = append(part.hot, *r)
		case len(*b) == 0 && len(rooms[p]) < cap(rooms[p]):
			rooms[p] = append(rooms[p], ci)
		default:
			if len(*b) == 0 || len((*b)[len(*b)-1]) == coldBlock {
				*b = append(*b, make([]coldImage, 0, coldBlock))
			}
			(*b)[len(*b)-1] = append((*b)[len(*b)-1], ci)
		}
		return nil
	})
	if err != nil {
		idx.Close()
		return loadedIndex{}, fmt.Errorf("read index: %w", err)
	}
	c.idx = idx
	all := loadedIndex{Loaded: l}
	n, spilled := 0, false
	for p := range rooms {
		n += len(rooms[p])
		for _, b := range blocks[p] {
			n += len(b)
			spilled = true
		}
	}
	for i := range parts {
		all.deletes = append(all.deletes, parts[i].deletes...)
		all.hot = append(all.hot, parts[i].hot...)
	}
	if !spilled && len(whole)-n <= n/4+16<<10 { // moved together, unless far more room was made than used
		k := 0
		for p := range rooms {
			k += copy(whole[k:], rooms[p]) // to the left of the room (or where it is): what follows is not yet moved
		}
		for p := range rooms { // what was left behind, the rest never touched
			start := max(n, p*room)
			if end := p*room + len(rooms[p]); start < end {
				clear(whole[start:end])
			}
		}
		all.cold = whole[:n:n]
		return all, nil
	}
	all.cold = make([]coldImage, 0, n)
	for p := range rooms {
		all.cold = append(all.cold, rooms[p]...)
		for _, b := range blocks[p] {
			all.cold = append(all.cold, b...)
		}
		blocks[p] = nil
	}
	return all, nil
}

// coldRoom is the room made for the cold images of each part of the
// index, of about est records in all; a variable for tests.
var coldRoom = func(est int) int { return est/index.LoadParts + est/(8*index.LoadParts) + 1024 }

// coldBlock is how many cold images a block of start-up's holds.
const coldBlock = 4096
