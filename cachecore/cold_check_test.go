package cachecore

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

// catalogFaults returns what is wrong with the catalog c holds, hot and
// cold, "" if nothing is:
//   - the cold set is in catalog order, byID in ID order and a
//     permutation of it, and each cold image's record is one coldOf takes;
//   - an image still cold is neither hot nor lingering, and the tree shows
//     it at its name, as its cold form;
//   - each directory's entries are sorted by name, each subdirectory is a
//     directory of the tree, the tree counts its images' entries;
//   - an image's entry holds an image of the catalog (hot, or cold made hot
//     since) with that name and inode;
//   - a hot image listed (not retired) has an entry at its first name, and
//     its link count is how many of its names hold it.
func catalogFaults(c *Cache) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var faults []string
	fault := func(format string, a ...any) {
		if len(faults) < 10 {
			faults = append(faults, fmt.Sprintf(format, a...))
		}
	}
	tr, s := c.tree.Load(), c.cold

	for i := range s.imgs {
		ci := &s.imgs[i]
		if i > 0 && catalogOrder(s.imgs[i-1].name, ci.name) >= 0 {
			fault("cold set: %q after %q", ci.name, s.imgs[i-1].name)
		}
		r := ci.record()
		if _, ok := coldOf(&r); !ok {
			fault("cold set: %q: its record is not a cold one: %+v", ci.name, r)
		}
		if s.hot[i].Load() {
			continue
		}
		id := ci.id.hex()
		if c.images[id] != nil || c.lingering[id] != nil {
			fault("%q is cold and has an Image", ci.name)
		}
		if ch, ok := tr.file(ci.name); !ok || ch.cold != ci || ch.ino != ci.ino() {
			fault("cold %q is not in the tree as itself (found %v)", ci.name, ok)
		}
	}
	if len(s.byID) != len(s.imgs) || len(s.hot) != len(s.imgs) {
		fault("cold set: %d images, %d in byID, %d hot flags", len(s.imgs), len(s.byID), len(s.hot))
	} else {
		seen := make([]bool, len(s.imgs))
		for j, k := range s.byID {
			if seen[k] {
				fault("cold set: byID holds %d twice", k)
			}
			seen[k] = true
			if j > 0 && bytes.Compare(s.imgs[s.byID[j-1]].id[:], s.imgs[k].id[:]) >= 0 {
				fault("cold set: byID out of order at %d", j)
			}
		}
	}

	entries := 0
	for p, d := range tr.dirs {
		for i := range d.children {
			ch := &d.children[i]
			path := joinPath(p, ch.name)
			if i > 0 && d.children[i-1].name >= ch.name {
				fault("directory %q: %q after %q", p, ch.name, d.children[i-1].name)
			}
			if ch.isDir() {
				if sub := tr.dirs[path]; sub == nil || sub.ino != ch.ino || sub.path != path {
					fault("directory %q: its entry has no directory of that inode", path)
				}
				continue
			}
			entries++
			img := ch.img
			if img == nil {
				k, ok := s.find(ch.cold.id)
				switch {
				case !ok:
					fault("%q: a cold image not in the cold set", path)
					continue
				case !s.hot[k].Load():
					if ch.ino != ch.cold.ino() || ch.cold.name != path {
						fault("%q: cold entry of %q, inode %d (its own %d)", path, ch.cold.name, ch.ino, ch.cold.ino())
					}
					continue
				}
				if img = c.imageOfKeyLocked(&ch.cold.id); img == nil {
					fault("%q: made hot, and not in the catalog", path)
					continue
				}
			}
			if c.images[img.id] != img {
				fault("%q: an image not in the catalog", path)
			}
			img.mu.Lock()
			names := img.names()
			img.mu.Unlock()
			if !slices.Contains(names, path) || ch.ino != img.ino {
				fault("%q: holds image %q (names %q), inode %d (its own %d)", path, img.id, names, ch.ino, img.ino)
			}
		}
	}
	if entries != tr.images {
		fault("the tree counts %d entries of images, holds %d", tr.images, entries)
	}

	for id, img := range c.images {
		img.mu.Lock()
		names, retired := img.names(), !img.rec.Extras().RetiredAt.IsZero()
		img.mu.Unlock()
		placed := uint32(0)
		for _, name := range names {
			ch, ok := tr.file(name)
			if ok && (ch.img == img || ch.img == nil && ch.cold.id.hex() == id) {
				placed++
			}
		}
		if placed == 0 && !retired {
			fault("hot %q is in no directory", names[0])
		}
		if placed > 0 && img.links.Load() != placed {
			fault("%q: link count %d, in %d places", names[0], img.links.Load(), placed)
		}
		if _, ok := c.lingering[id]; ok {
			fault("%q is both listed and lingering", names[0])
		}
	}
	if len(faults) == 0 {
		return ""
	}
	return fmt.Sprint(faults)
}

// checkCatalog fails t if the catalog of c breaks an invariant
// (catalogFaults).
func checkCatalog(t testing.TB, c *Cache) {
	t.Helper()
	if f := catalogFaults(c); f != "" {
		t.Errorf("catalog invariants: %s", f)
	}
}
