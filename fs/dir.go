package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/cachecore"
)

// dirNode is a directory of the catalog, found again by path in the
// current catalog on every operation, so a refresh shows at once.
type dirNode struct {
	gofs.Inode
	c    *cachecore.Cache
	path string // "" for the root
}

var (
	_ = (gofs.NodeLookuper)((*dirNode)(nil))
	_ = (gofs.NodeReaddirer)((*dirNode)(nil))
	_ = (gofs.NodeGetattrer)((*dirNode)(nil))
	_ = (gofs.NodeSetattrer)((*dirNode)(nil))
	_ = (gofs.NodeAccesser)((*dirNode)(nil))
	_ = (gofs.NodeCreater)((*dirNode)(nil))
	_ = (gofs.NodeMkdirer)((*dirNode)(nil))
	_ = (gofs.NodeMknoder)((*dirNode)(nil))
	_ = (gofs.NodeLinker)((*dirNode)(nil))
	_ = (gofs.NodeSymlinker)((*dirNode)(nil))
	_ = (gofs.NodeUnlinker)((*dirNode)(nil))
	_ = (gofs.NodeRmdirer)((*dirNode)(nil))
	_ = (gofs.NodeRenamer)((*dirNode)(nil))
	_ = (gofs.NodeGetxattrer)((*dirNode)(nil))
	_ = (gofs.NodeListxattrer)((*dirNode)(nil))
	_ = (gofs.NodeSetxattrer)((*dirNode)(nil))
	_ = (gofs.NodeRemovexattrer)((*dirNode)(nil))
)

func (d *dirNode) childPath(name string) string {
	if d.path == "" {
		return name
	}
	return d.path + "/" + name
}

func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	e, ok := d.c.Lookup(d.childPath(name))
	if !ok {
		return nil, syscall.ENOENT
	}
	var node gofs.InodeEmbedder
	mode := uint32(fuse.S_IFDIR)
	if e.IsDir() {
		node = &dirNode{c: d.c, path: e.Path}
		dirAttr(d.c, e, &out.Attr)
	} else {
		node = &imageNode{c: d.c, img: e.Image}
		mode = fuse.S_IFREG
		timeout := imageAttr(e.Image, &out.Attr)
		out.SetAttrTimeout(timeout)
	}
	return d.NewInode(ctx, node, gofs.StableAttr{Mode: mode, Ino: e.Ino}), 0
}

func (d *dirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	dir, ok := d.c.ReadDir(d.path)
	if !ok {
		return nil, syscall.ENOENT // this directory left the catalog
	}
	return &dirStream{dir: dir}, 0
}

// dirStream lists a directory of the catalog as it was at the opendir,
// reading its entries in place, one READDIR's worth at a time: a
// directory of 250,000 images is listed without a copy of it. The
// offset of an entry is its index plus one, so that a seek (the kernel
// asking again from an offset) is a jump.
type dirStream struct {
	dir cachecore.Dir
	i   int
}

var (
	_ gofs.DirStream     = (*dirStream)(nil)
	_ gofs.FileSeekdirer = (*dirStream)(nil)
)

func (s *dirStream) HasNext() bool { return s.i < s.dir.Len() }

func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	name, ino, isDir := s.dir.At(s.i)
	s.i++
	mode := uint32(fuse.S_IFREG)
	if isDir {
		mode = fuse.S_IFDIR
	}
	return fuse.DirEntry{Name: name, Ino: ino, Mode: mode, Off: uint64(s.i)}, 0
}

func (s *dirStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(s.dir.Len()) {
		return syscall.EINVAL
	}
	s.i = int(off)
	return 0
}

func (s *dirStream) Close() {}

func (d *dirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e, ok := d.c.Lookup(d.path); ok {
		dirAttr(d.c, e, &out.Attr)
	} else {
		out.Mode, out.Nlink = fuse.S_IFDIR|0o555, 2
	}
	return 0
}

func dirAttr(c *cachecore.Cache, e *cachecore.Entry, a *fuse.Attr) {
	a.Ino = e.Ino
	a.Mode = fuse.S_IFDIR | 0o555
	a.Nlink = 2
	a.Size = 4096
	a.Blksize = 4096
	fillTimes(a, c.CatalogStatus().RefreshedAt)
}

func (d *dirNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	if mask&2 != 0 { // W_OK
		return readOnly
	}
	return 0
}

func (d *dirNode) Setattr(context.Context, gofs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return readOnly
}

func (d *dirNode) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, readOnly
}

func (d *dirNode) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, readOnly
}

func (d *dirNode) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, readOnly
}

func (d *dirNode) Link(context.Context, gofs.InodeEmbedder, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, readOnly
}

func (d *dirNode) Symlink(context.Context, string, string, *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, readOnly
}

func (d *dirNode) Unlink(context.Context, string) syscall.Errno { return readOnly }
func (d *dirNode) Rmdir(context.Context, string) syscall.Errno  { return readOnly }

func (d *dirNode) Rename(context.Context, string, gofs.InodeEmbedder, string, uint32) syscall.Errno {
	return readOnly
}

func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if d.path != "" {
		return 0, syscall.ENODATA
	}
	return getxattr(rootXattrs, noAttrs, rootInfo(d.Root().Operations().(*Root)), attr, dest)
}

func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if d.path != "" {
		return 0, 0
	}
	return listxattr(rootXattrs, noAttrs, rootInfo(d.Root().Operations().(*Root)), dest)
}

func (d *dirNode) Setxattr(context.Context, string, []byte, uint32) syscall.Errno {
	return syscall.EPERM
}

func (d *dirNode) Removexattr(context.Context, string) syscall.Errno {
	return syscall.EPERM
}
