package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/cachecore"
)

// imageNode is one version of an image: a read-only regular file.
type imageNode struct {
	gofs.Inode
	c   *cachecore.Cache
	img *cachecore.Image

	modes ioModes // which opens use the kernel's caching mode (passthrough.go)
}

var (
	_ = (gofs.NodeOpener)((*imageNode)(nil))
	_ = (gofs.NodeGetattrer)((*imageNode)(nil))
	_ = (gofs.NodeSetattrer)((*imageNode)(nil))
	_ = (gofs.NodeAccesser)((*imageNode)(nil))
	_ = (gofs.NodeGetxattrer)((*imageNode)(nil))
	_ = (gofs.NodeListxattrer)((*imageNode)(nil))
	_ = (gofs.NodeSetxattrer)((*imageNode)(nil))
	_ = (gofs.NodeRemovexattrer)((*imageNode)(nil))
)

func (n *imageNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if wantsWrite(flags) {
		return nil, 0, readOnly
	}
	h, err := n.c.Open(n.img)
	if err != nil {
		return nil, 0, toErrno(err)
	}
	if err := h.CheckAtOpen(ctx); err != nil { // before openFlags may hand the kernel the file
		h.Close()
		return nil, 0, toErrno(err)
	}
	fh := &imageHandle{node: n, h: h, fd: h.Fd(), cachedAtOpen: n.img.CachedBytes()}
	n.rootNode().opens.add(n)
	if fh.cachedAtOpen < n.img.Size() {
		// The kernel may hold attributes given while nobody had the image
		// open (idleTimeout): st_blocks grows from now on, so they go, and
		// those it asks for next last shortTimeout.
		go n.NotifyContent(-1, 0)
	}
	return fh, fh.openFlags(), 0
}

func (n *imageNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.SetTimeout(imageAttr(n.img, &out.Attr))
	return 0
}

// imageAttr fills a file's attributes and says how long the kernel may
// keep them. st_blocks counts the cached bytes, so du shows the cache.
func imageAttr(img *cachecore.Image, a *fuse.Attr) time.Duration {
	cached := img.CachedBytes()
	a.Ino = img.Ino()
	a.Mode = fuse.S_IFREG | 0o444
	a.Nlink = img.Links() // one image under several names (ByDigest) is one inode
	a.Size = uint64(img.Size())
	a.Blocks = uint64((cached + 511) / 512)
	a.Blksize = 1 << 20 // a hint to readers: large reads are cheap
	t := img.ModTime()
	if t.IsZero() { // unknown upstream (a registry's blobs): when the cache first listed it, not 1970
		t = img.Added()
	}
	fillTimes(a, t)
	switch {
	case cached == img.Size():
		return longTimeout
	case img.InUse():
		return shortTimeout
	default:
		return idleTimeout
	}
}

func (n *imageNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&2 != 0 { // W_OK
		return readOnly
	}
	return 0
}

func (n *imageNode) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return readOnly
}

func (n *imageNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return getxattr(imageXattrs, attrsOf, n.img.Info(), attr, dest)
}

func (n *imageNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return listxattr(imageXattrs, attrsOf, n.img.Info(), dest)
}

func (n *imageNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return setImageXattr(n.c, n.img, attr, data)
}

func (n *imageNode) Removexattr(context.Context, string) syscall.Errno {
	return syscall.EPERM
}

// imageHandle is an open image.
type imageHandle struct {
	node         *imageNode
	h            *cachecore.Handle
	fd           uintptr
	cachedAtOpen int64
	passthrough  bool // set by openFlags, before the kernel asks PassthroughFd
}

var (
	_ = (gofs.FileReader)((*imageHandle)(nil))
	_ = (gofs.FileReleaser)((*imageHandle)(nil))
)

// Read answers from the cache file by splicing (no copy through this
// process); the file stays open until Release, after the splice.
func (fh *imageHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	sp, err := fh.h.Read(ctx, off, len(dest))
	if err != nil {
		return nil, toErrno(err)
	}
	if sp.Data != nil { // no room to store it: read straight from the upstream
		return fuse.ReadResultData(sp.Data), 0
	}
	return fuse.ReadResultFd(fh.fd, sp.Off, sp.Len), 0
}

// Release closes the handle. If this open brought chunks in, the
// kernel's copy of st_blocks is stale: tell it, from another goroutine, as
// a notification must not wait on the request that causes it.
func (fh *imageHandle) Release(ctx context.Context) syscall.Errno {
	lastCached := fh.releaseMode()
	fh.node.rootNode().opens.remove(fh.node)
	fh.h.Close()
	switch {
	case fh.dropPagesAtRelease(lastCached):
		go fh.node.NotifyContent(0, 0) // pages and attributes (passthrough.go)
	case fh.node.img.CachedBytes() != fh.cachedAtOpen:
		go fh.node.NotifyContent(-1, 0) // attributes only; the page cache stays
	}
	return 0
}
