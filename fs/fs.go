// Package fs shows a cachecore.Cache as a read-only FUSE filesystem: the
// catalog's directories and images as directories and files, each image's
// cache state as user.imgcache.* extended attributes. It is a thin layer:
// every decision about data is the cache's.
//
// # Kernel caching
//
// An image version never changes, so lookups and attributes are cached
// for long. A settled image (complete and, with a digest, verified) is
// read by the kernel straight from the data file (passthrough, when the
// mount's probe found it works: passthrough.go), or else its pages are
// kept in the page cache across opens (FOPEN_KEEP_CACHE). Two things do change: the catalog (a refresh gives a
// changed image a new inode; the Notifier drops the kernel's stale lookups)
// and an incomplete image's cached bytes, which st_blocks reports (so its
// attributes are cached briefly and dropped when an open that fetched
// closes). Because the kernel may answer reads itself, hits are counted at
// open.
package fs

import (
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/cachecore"
)

const (
	// longTimeout is for what cannot change without the Notifier telling
	// the kernel: lookups, and attributes of complete images.
	longTimeout = time.Hour
	// shortTimeout is for attributes of incomplete images: st_blocks
	// grows as chunks arrive.
	shortTimeout = time.Second
	// idleTimeout is for attributes of incomplete images that nobody has
	// open and nothing fetches: st_blocks changes only by an open (whose
	// release invalidates them) or by an eviction or a prefetch, which
	// the cache tells (Notifier.CachedChanged). ls -l of a large
	// directory then costs no GETATTR per image.
	idleTimeout = time.Minute
	// negativeTimeout bounds how long a missing name is remembered.
	negativeTimeout = time.Second
)

// Root is the root directory of the filesystem.
type Root struct {
	dirNode
	opens       openImages  // images open now, for Notifier.PagesDropped
	passthrough atomic.Bool // the mount's probe found passthrough works (passthrough.go)
}

// NewRoot returns the root node of a filesystem showing c.
func NewRoot(c *cachecore.Cache) *Root {
	return &Root{dirNode: dirNode{c: c}}
}

// Options returns go-fuse options suited to this filesystem; the caller
// adds mount options (name, debug, allow_other, direct mount).
func Options() *gofs.Options {
	entry, attr, neg := longTimeout, longTimeout, negativeTimeout
	o := &gofs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
	}
	// Plain READDIR, not READDIRPLUS: with it every entry listed was
	// looked up (a node for each, and the image made hot, cachecore's
	// cold.go), so that ls of a directory of 250,000 images took 3.6 s
	// and kept them all; ls -l looks up what it shows, and only that.
	o.MountOptions.DisableReadDirPlus = true
	return o
}

// readOnly answers every operation that would change the filesystem.
const readOnly = syscall.EROFS

// wantsWrite reports whether open flags ask for anything but reading.
func wantsWrite(flags uint32) bool {
	return flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0
}

func fillTimes(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		return
	}
	a.SetTimes(&t, &t, &t)
}
