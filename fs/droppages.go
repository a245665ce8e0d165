package fs

import (
	"sync"

	"github.com/imgcache/imgcache/cachecore"
)

// Dropping pages. When the cache drops bytes as wrong (an image that
// failed verification, chunks found damaged at rest), the kernel may
// still hold pages of them. An open after the drop loses them (images
// that are not settled are opened without FOPEN_KEEP_CACHE), but a file
// that is open now would keep reading them from the page cache: the
// kernel is told to forget them (Notifier.PagesDropped). Only open
// images can have such readers, so only they are tracked.

// openImages counts the opens of each image node.
type openImages struct {
	mu    sync.Mutex // protects the following
	nodes map[*cachecore.Image]*openCount
}

type openCount struct {
	node  *imageNode
	opens int
}

func (o *openImages) add(n *imageNode) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.nodes == nil {
		o.nodes = make(map[*cachecore.Image]*openCount)
	}
	oc := o.nodes[n.img]
	if oc == nil {
		oc = &openCount{node: n}
		o.nodes[n.img] = oc
	}
	oc.opens++
}

func (o *openImages) remove(n *imageNode) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oc := o.nodes[n.img]; oc != nil {
		if oc.opens--; oc.opens == 0 {
			delete(o.nodes, n.img)
		}
	}
}

func (o *openImages) node(img *cachecore.Image) *imageNode {
	o.mu.Lock()
	defer o.mu.Unlock()
	if oc := o.nodes[img]; oc != nil {
		return oc.node
	}
	return nil
}

// rootNode is the filesystem's Root.
func (n *imageNode) rootNode() *Root {
	return n.Root().Operations().(*Root)
}
