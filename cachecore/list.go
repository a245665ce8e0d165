package cachecore

import (
	"iter"
	"slices"
	"sort"
	"strings"
)

// Images yields a snapshot of each image of the catalog whose name starts
// with prefix ("" for all, "ubuntu/" for a directory's), in name order:
// what the management API lists. It walks the catalog tree as it yields,
// so that a listing of a million images is never held whole, and finds
// the first image of a prefix without visiting those before it. A cold
// image is listed as it is (nothing cached), not made hot.
func (c *Cache) Images(prefix string) iter.Seq[Info] {
	return func(yield func(Info) bool) {
		dirPath, rest := "", prefix
		if i := strings.LastIndexByte(prefix, '/'); i == 0 {
			return // no name starts with a slash
		} else if i > 0 {
			dirPath, rest = prefix[:i], prefix[i+1:]
		}
		t := c.tree.Load()
		d := t.dirs[dirPath]
		if d == nil {
			return
		}
		children := inPathOrder(d.children)
		first := sort.Search(len(children), func(i int) bool { return pathKey(&children[i]) >= rest })
		for i := range children[first:] {
			ch := &children[first+i]
			if !strings.HasPrefix(pathKey(ch), rest) || !c.walkImages(t, joinPath(dirPath, ch.name), ch, yield) {
				return
			}
		}
	}
}

// walkImages yields the images at and below entry ch (at path) of t in
// name order; false if yield asked to stop. An image of several names
// (ByDigest) is yielded once, at its first name, as Info names it.
func (c *Cache) walkImages(t *tree, path string, ch *child, yield func(Info) bool) bool {
	switch {
	case ch.img != nil:
		info := ch.img.Info()
		return info.Name != path || yield(info)
	case ch.cold != nil:
		return yield(c.coldInfo(ch.cold))
	}
	children := inPathOrder(t.dirs[path].children)
	for i := range children {
		if !c.walkImages(t, joinPath(path, children[i].name), &children[i], yield) {
			return false
		}
	}
	return true
}

// coldInfo is the Info of a cold image of a tree: the Image's if one was
// made of it since.
func (c *Cache) coldInfo(ci *coldImage) Info {
	c.mu.Lock()
	var img *Image
	if i, ok := c.cold.find(ci.id); ok && c.cold.hot[i].Load() {
		img = c.imageOfKeyLocked(&ci.id)
	}
	c.mu.Unlock()
	if img != nil {
		return img.Info()
	}
	return ci.info(c.up.URL(ci.name))
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// pathKey orders the entries of a directory as their paths sort: a
// subdirectory as its name and a slash, the start of every path below it
// ("a-b" comes before "a/x", since '-' < '/').
func pathKey(ch *child) string {
	if ch.isDir() {
		return ch.name + "/"
	}
	return ch.name
}

// inPathOrder returns children (sorted by name) sorted by pathKey: the
// same slice unless a subdirectory's name is a prefix of a sibling's.
func inPathOrder(children []child) []child {
	byKey := func(a, b child) int { return strings.Compare(pathKey(&a), pathKey(&b)) }
	if slices.IsSortedFunc(children, byKey) {
		return children
	}
	sorted := slices.Clone(children)
	slices.SortFunc(sorted, byKey)
	return sorted
}
