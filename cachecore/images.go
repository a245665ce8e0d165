package cachecore

import (
	"slices"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Images returns a snapshot of every image in the catalog, sorted by name:
// what the management API lists.
func (c *Cache) Images() []Info {
	imgs := c.imageList()
	infos := make([]Info, 0, len(imgs))
	for _, img := range imgs {
		infos = append(infos, img.Info())
	}
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return infos
}

// imageList returns the images of the catalog, in no order, so that
// callers can visit them without holding Cache.mu (each takes Image.mu).
func (c *Cache) imageList() []*Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	imgs := make([]*Image, 0, len(c.images))
	for _, img := range c.images {
		imgs = append(imgs, img)
	}
	return imgs
}

// ImageNamed finds the image called name (a path of the catalog, like
// "ubuntu/jammy.img") in the current catalog.
func (c *Cache) ImageNamed(name string) (*Image, error) {
	e, ok := c.Lookup(name)
	if !ok || e.IsDir() {
		return nil, &Error{Op: "find", Name: name, Err: ErrNotFound}
	}
	return e.Image, nil
}

// entries returns the upstream entries of the catalog's images.
func (c *Cache) entries() []upstream.Entry {
	imgs := c.imageList()
	es := make([]upstream.Entry, len(imgs))
	for i, img := range imgs {
		es[i] = img.entry
	}
	return es
}
