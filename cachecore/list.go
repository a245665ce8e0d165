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
// the first image of a prefix without visiting those before it.
func (c *Cache) Images(prefix string) iter.Seq[Info] {
	return func(yield func(Info) bool) {
		dirPath, rest := "", prefix
		if i := strings.LastIndexByte(prefix, '/'); i == 0 {
			return // no name starts with a slash
		} else if i > 0 {
			dirPath, rest = prefix[:i], prefix[i+1:]
		}
		d, ok := c.Lookup(dirPath)
		if !ok || !d.IsDir() {
			return
		}
		children := inPathOrder(d.Children)
		first := sort.Search(len(children), func(i int) bool { return pathKey(children[i]) >= rest })
		for _, e := range children[first:] {
			if !strings.HasPrefix(pathKey(e), rest) || !walkImages(e, yield) {
				return
			}
		}
	}
}

// walkImages yields the images at and below e in name order; false if
// yield asked to stop. An image of several names (ByDigest) is yielded
// once, at its first name, as Info names it.
func walkImages(e *Entry, yield func(Info) bool) bool {
	if !e.IsDir() {
		info := e.Image.Info()
		return info.Name != e.Path || yield(info)
	}
	for _, ch := range inPathOrder(e.Children) {
		if !walkImages(ch, yield) {
			return false
		}
	}
	return true
}

// pathKey orders the entries of a directory as their paths sort: a
// subdirectory as its name and a slash, the start of every path below it
// ("a-b" comes before "a/x", since '-' < '/').
func pathKey(e *Entry) string {
	if e.IsDir() {
		return e.Name + "/"
	}
	return e.Name
}

// inPathOrder returns children (sorted by name) sorted by pathKey: the
// same slice unless a subdirectory's name is a prefix of a sibling's.
func inPathOrder(children []*Entry) []*Entry {
	byKey := func(a, b *Entry) int { return strings.Compare(pathKey(a), pathKey(b)) }
	if slices.IsSortedFunc(children, byKey) {
		return children
	}
	sorted := slices.Clone(children)
	slices.SortFunc(sorted, byKey)
	return sorted
}
