package cachecore

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
)

// The catalog tree: what the filesystem shows, one version of it,
// immutable and swapped whole (Cache.tree) when the catalog changes, so
// that it is read without locks. A directory holds its entries sorted by
// name; an entry of an image holds the image (hot) or its coldImage
// (cold.go). A catalog of a million images is a map of its directories
// and 40 bytes an image.

// tree is one version of the catalog.
type tree struct {
	dirs   map[string]*dirNode // by path; "" is the root
	images int                 // entries of images (an image of several names counts each)
}

// dirNode is a directory of a tree.
type dirNode struct {
	path     string
	ino      uint64
	children []child // sorted by name
}

// child is an entry of a directory: a directory (img and cold nil), a hot
// image or a cold one.
type child struct {
	name string
	ino  uint64
	img  *Image
	cold *coldImage
}

func (ch *child) isDir() bool { return ch.img == nil && ch.cold == nil }

// find returns the index of the entry called name, or where it would go.
func (d *dirNode) find(name string) (int, bool) {
	i := sort.Search(len(d.children), func(i int) bool { return d.children[i].name >= name })
	return i, i < len(d.children) && d.children[i].name == name
}

// entry finds the entry at path: its directory (ok) and its index there,
// or the directory itself if path names one.
func (t *tree) entry(path string) (d *dirNode, i int, isDir *dirNode, ok bool) {
	if dn := t.dirs[path]; dn != nil {
		return nil, 0, dn, true
	}
	if path == "" {
		return nil, 0, nil, false
	}
	d = t.dirs[parentPath(path)]
	if d == nil {
		return nil, 0, nil, false
	}
	i, ok = d.find(baseName(path))
	return d, i, nil, ok
}

// file returns the entry of the image at path.
func (t *tree) file(path string) (*child, bool) {
	d, i, dir, ok := t.entry(path)
	if !ok || dir != nil {
		return nil, false
	}
	return &d.children[i], true
}

// eachFile calls fn with each entry of an image and its path, in no
// order.
func (t *tree) eachFile(fn func(path string, ch *child)) {
	for p, d := range t.dirs {
		for i := range d.children {
			if ch := &d.children[i]; !ch.isDir() {
				fn(joinPath(p, ch.name), ch)
			}
		}
	}
}

// imageOfLocked returns the Image of an entry of a tree of the current
// catalog (or of the one being published), made now if it was cold; nil
// if it has left the catalog. c.mu is held.
func (c *Cache) imageOfLocked(ch *child) *Image {
	if ch.img != nil {
		return ch.img
	}
	if i, ok := c.cold.find(ch.cold.id); ok {
		return c.heatLocked(i)
	}
	return nil
}

// hotLocked returns the Image of an entry of a tree if it has one: nil
// for an image still cold (or gone). c.mu is held.
func (c *Cache) hotLocked(ch *child) *Image {
	if ch.img != nil {
		return ch.img
	}
	if i, ok := c.cold.find(ch.cold.id); ok && c.cold.hot[i].Load() {
		return c.imageOfKeyLocked(&ch.cold.id)
	}
	return nil
}

// Entry is a file or directory of the catalog as the filesystem shows it.
type Entry struct {
	Name  string // base name
	Path  string // full slash-separated path, "" for the root
	Ino   uint64 // stable inode number
	Image *Image // nil for a directory
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Image == nil }

// Root returns the catalog's root directory.
func (c *Cache) Root() *Entry { return &Entry{Ino: 1} }

// Lookup finds the entry at path ("" is the root) in the current catalog.
// An image that was cold is hot from now on (cold.go).
func (c *Cache) Lookup(path string) (*Entry, bool) {
	d, i, dir, ok := c.tree.Load().entry(path)
	switch {
	case !ok:
		return nil, false
	case dir != nil:
		return &Entry{Name: baseName(path), Path: path, Ino: dir.ino}, true
	}
	ch := &d.children[i]
	img := ch.img
	if img == nil {
		img = c.imageOfCold(ch.cold)
	}
	if img == nil {
		return nil, false // it has left the catalog since
	}
	return &Entry{Name: ch.name, Path: path, Ino: ch.ino, Image: img}, true
}

// Dir is a directory of the catalog as it was when it was read: its
// entries, sorted by name, read in place (a directory of 250,000 images
// is listed without a copy).
type Dir struct{ d *dirNode }

// ReadDir returns the directory at path ("" is the root).
func (c *Cache) ReadDir(path string) (Dir, bool) {
	d := c.tree.Load().dirs[path]
	return Dir{d}, d != nil
}

// Len is how many entries the directory has.
func (d Dir) Len() int { return len(d.d.children) }

// At returns entry i.
func (d Dir) At(i int) (name string, ino uint64, isDir bool) {
	ch := &d.d.children[i]
	return ch.name, ch.ino, ch.isDir()
}

// ImageCount is how many entries of images the catalog has.
func (c *Cache) ImageCount() int { return c.tree.Load().images }

// buildTree makes the catalog tree of c.images and c.cold; c.mu must be
// held (or the cache not yet running). Names were cleaned by the
// upstream; of a name that is both a file and a directory the first in
// catalog order is kept. An image has an entry for each of its names
// (ByDigest: like hard links), and its link count is set to how many
// were placed. Images of the listing come first, hot and cold in
// catalog order (catalogOrder: by directory, then name, so that each
// directory's entries come together and in order); retired ones
// (catalog_retain.go) take the names left free, and those that get none
// are returned, to leave the catalog.
func (c *Cache) buildTree() (t *tree, unplaced []*Image) {
	type named struct {
		name string
		img  *Image
	}
	var listed, retired []named
	var retiredImgs []*Image
	for _, img := range c.images { // c.images holds exactly the catalog's hot images
		img.placed = 0
		x := img.rec.Extras()
		list := &listed
		if !x.RetiredAt.IsZero() {
			list = &retired
			retiredImgs = append(retiredImgs, img)
		}
		*list = append(*list, named{img.rec.Name, img})
		for _, l := range x.Links {
			*list = append(*list, named{l, img})
		}
	}
	inOrder := func(a, b named) int { return catalogOrder(a.name, b.name) }
	slices.SortFunc(listed, inOrder)
	slices.SortFunc(retired, inOrder)

	cold := c.cold.imgs
	b := treeBuilder{c: c, t: &tree{dirs: map[string]*dirNode{}}, want: entriesByDir(len(listed), func(i int) string { return listed[i].name }, cold, c.cold.hot)}
	b.t.dirs[""] = &dirNode{ino: 1, children: make([]child, 0, b.want[""])}
	for i, j := 0, 0; i < len(listed) || j < len(cold); {
		switch {
		case j < len(cold) && c.cold.hot[j].Load():
			j++ // an Image was made of it: in c.images, or gone
		case j == len(cold) || i < len(listed) && catalogOrder(listed[i].name, cold[j].name) <= 0:
			if img := listed[i].img; b.add(listed[i].name, child{ino: img.ino, img: img}, true) {
				img.placed++
			}
			i++
		default:
			b.add(cold[j].name, child{ino: cold[j].ino(), cold: &cold[j]}, true)
			j++
		}
	}
	for _, n := range retired {
		if b.add(n.name, child{ino: n.img.ino, img: n.img}, false) {
			n.img.placed++
		}
	}
	for _, img := range c.images {
		img.links.Store(img.placed)
	}
	for _, img := range retiredImgs {
		if img.placed == 0 {
			unplaced = append(unplaced, img)
		}
	}
	return b.t, unplaced
}

// entriesByDir counts the images of each directory, the listed hot
// ones (their names) and the cold ones still cold, so that a directory's
// entries are allocated once (appended one at a time, the 250,000 of a
// directory were copied over and over, and left a quarter unused). Both
// come in catalog order: a directory's images come together, and it is
// looked up once for each run of them.
func entriesByDir(listed int, listedName func(int) string, cold []coldImage, hot []atomic.Bool) map[string]int {
	want := map[string]int{}
	count := func(n int, name func(int) (string, bool)) {
		dir, run := "", 0
		for i := range n {
			nm, ok := name(i)
			if !ok {
				continue
			}
			if p := parentPath(nm); p != dir || run == 0 {
				if run > 0 {
					want[dir] += run
				}
				dir, run = p, 0
			}
			run++
		}
		if run > 0 {
			want[dir] += run
		}
	}
	count(listed, func(i int) (string, bool) { return listedName(i), true })
	count(len(cold), func(i int) (string, bool) { return cold[i].name, !hot[i].Load() })
	return want
}

// treeBuilder places entries in a tree being built; a directory's
// entries are kept sorted by name.
type treeBuilder struct {
	c        *Cache
	t        *tree
	want     map[string]int // about how many entries each directory will hold
	lastPath string         // the directory of the entry placed last, found again at once
	last     *dirNode
}

// add places an entry at name unless the name is taken or a file is in
// the way of its directory. inOrder says the name comes in catalog order
// after those added before it (each directory's entries together, in
// order): it goes at the end of its directory, and a name taken is the
// last one there.
func (b *treeBuilder) add(name string, ch child, inOrder bool) bool {
	d := b.dir(parentPath(name))
	if d == nil {
		return false
	}
	ch.name = baseName(name)
	i, taken := len(d.children), false
	if n := len(d.children); inOrder && n > 0 && d.children[n-1].name >= ch.name {
		taken = d.children[n-1].name == ch.name
		inOrder = taken // else out of order after all (a directory made in between): find its place
	}
	if !inOrder {
		i, taken = d.find(ch.name)
	}
	if taken {
		return false // listed twice
	}
	d.children = slices.Insert(d.children, i, ch)
	b.t.images++
	return true
}

// dir returns the directory at path, made (with those above it) if it
// is not there yet, or nil if a file is in the way.
func (b *treeBuilder) dir(path string) *dirNode {
	if path == b.lastPath && b.last != nil {
		return b.last
	}
	d := b.t.dirs[path]
	if d == nil {
		parent := b.dir(parentPath(path))
		if parent == nil {
			return nil
		}
		name := baseName(path)
		i, taken := parent.find(name)
		if taken {
			b.c.log.Warn("image name clashes with a file; not listed", "directory", path)
			return nil
		}
		ch := child{name: name, ino: dirIno(path)}
		parent.children = slices.Insert(parent.children, i, ch)
		d = &dirNode{path: path, ino: ch.ino, children: make([]child, 0, b.want[path])}
		b.t.dirs[path] = d
	}
	b.lastPath, b.last = path, d
	return d
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func dirIno(p string) uint64 {
	h := sha256.Sum256([]byte("dir\x00" + p))
	return inoOfID(h)
}

// inoOfID derives a stable inode number from an ID; 0 and 1 are taken
// (none, and the root). inoOf of its hex form is the same.
func inoOfID(id [32]byte) uint64 {
	ino := binary.BigEndian.Uint64(id[:8])
	if ino < 2 {
		ino += 2
	}
	return ino
}

// diffTrees lists the entries that are new, gone, or now a different
// inode: each directory's entries of both trees, side by side.
func diffTrees(old, cur *tree) []Change {
	var ch []Change
	for p, d := range cur.dirs {
		var was []child
		if o := old.dirs[p]; o != nil {
			was = o.children
		}
		ch = diffDir(ch, p, was, d.children)
	}
	for p, o := range old.dirs {
		if cur.dirs[p] == nil {
			ch = diffDir(ch, p, o.children, nil)
		}
	}
	return ch
}

// diffDir adds the changes between a directory's entries was and now.
func diffDir(ch []Change, dir string, was, now []child) []Change {
	i, j := 0, 0
	for i < len(was) || j < len(now) {
		switch {
		case j == len(now) || i < len(was) && was[i].name < now[j].name:
			ch = append(ch, Change{Dir: dir, Name: was[i].name})
			i++
		case i == len(was) || now[j].name < was[i].name:
			ch = append(ch, Change{Dir: dir, Name: now[j].name})
			j++
		default:
			if was[i].ino != now[j].ino {
				ch = append(ch, Change{Dir: dir, Name: now[j].name})
			}
			i++
			j++
		}
	}
	return ch
}
