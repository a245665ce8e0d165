package fs

import (
	"strings"
	"sync/atomic"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imgcache/imgcache/cachecore"
)

// Notifier passes on to the kernel what the cache changed
// (cachecore.Notifier): stale lookups, attributes and pages are dropped.
// It is made before the cache opens, since the cache may call it from
// then on, and learns the root once the filesystem is mounted (Attach);
// before that the kernel has cached nothing, and the calls do nothing.
type Notifier struct{ root atomic.Pointer[Root] }

var _ cachecore.Notifier = (*Notifier)(nil)

// Attach starts passing notifications on to the kernel through root,
// which must be mounted (a notification needs the server).
func (n *Notifier) Attach(root *Root) { n.root.Store(root) }

// CatalogChanged tells the kernel to forget its cached lookups of
// entries that changed in a catalog refresh. Only directories the kernel
// knows have anything to forget.
func (n *Notifier) CatalogChanged(changes []cachecore.Change) {
	r := n.root.Load()
	if r == nil {
		return
	}
	for _, ch := range changes {
		dir := r.EmbeddedInode()
		if ch.Dir != "" {
			dir = r.known(ch.Dir)
		}
		if dir != nil {
			dir.NotifyEntry(ch.Name)
		}
	}
}

// PagesDropped tells the kernel to forget its pages of bytes
// [off, off+n) of img, if img is open (droppages.go). The notification
// is sent from a goroutine of its own: the kernel may have to wait for a
// read of those pages that is in progress, and that read may be waiting
// for the caller.
func (n *Notifier) PagesDropped(img *cachecore.Image, off, size int64) {
	r := n.root.Load()
	if r == nil {
		return
	}
	if node := r.opens.node(img); node != nil {
		go node.NotifyContent(off, size)
	}
}

// CachedChanged tells the kernel that the attributes of the images
// called names changed (their data was dropped or prefetched without an
// open: st_blocks), since it may keep an image's attributes for long
// (fs.go: idleTimeout, longTimeout). Only inodes the kernel
// knows have anything to forget. The notifications go from a goroutine of
// their own: an eviction can happen inside a request (a read that makes
// room), and a notification must not wait on the request that causes it.
func (n *Notifier) CachedChanged(names []string) {
	r := n.root.Load()
	if r == nil {
		return
	}
	go func() {
		for _, name := range names {
			if node := r.known(name); node != nil {
				node.NotifyContent(-1, 0) // attributes only; the pages stay valid
			}
		}
	}()
}

// Settled drops the kernel's pages of an image just verified, in a mount
// that serves settled images by passthrough: kept from the reads before
// the verdict (cachecore.Image.KeepPages), they would otherwise be
// dropped by its next open, a passthrough one, on the reader's path (a
// third of the time of a warm read of 1 GiB). If the image is open, the
// release of its last open in the caching mode drops them
// (dropPagesAtRelease), and its readers keep them until then.
func (n *Notifier) Settled(img *cachecore.Image, names []string) {
	r := n.root.Load()
	if r == nil || r.ServeMode() != ServePassthrough || r.opens.node(img) != nil {
		return
	}
	go func() {
		for _, name := range names { // one inode, under any name the kernel looked up
			if node := r.known(name); node != nil {
				node.NotifyContent(0, 0)
				return
			}
		}
	}()
}

// known returns the inode of the file called name if the kernel has
// looked it up (else it caches nothing of it), nil if not.
func (r *Root) known(name string) *gofs.Inode {
	node := r.EmbeddedInode()
	for _, part := range strings.Split(name, "/") {
		if node = node.GetChild(part); node == nil {
			return nil
		}
	}
	return node
}
