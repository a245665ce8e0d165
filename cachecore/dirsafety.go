package cachecore

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// checkIndexDir checks badger's directory before badger opens it, by
// path: the way to it as for the cache directory, and it and everything
// in it as for anything in the cache directory (safedir.go). Nobody else
// can change them between the check and badger's opens, since nobody
// else may write the directories on the way. It creates the directory
// (0700) if missing.
func checkIndexDir(dir string) error {
	parent, err := openTrustedDir(filepath.Dir(dir), false)
	if err != nil {
		return err
	}
	defer parent.Close()
	d, err := parent.openDir(filepath.Base(dir), true)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.checkTree()
}

// checkTree checks every entry below d: directories (checked in turn) and
// regular files only.
func (d *safeDir) checkTree() error {
	names, err := d.readDirNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		st, err := d.lstat(name)
		if err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			if err := checkOwn(d.join(name), &st, unix.S_IFREG); err != nil {
				return err
			}
			continue
		}
		sub, err := d.openDir(name, false)
		if err != nil {
			return err
		}
		err = sub.checkTree()
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// Disk space. A full cache filesystem must not break the index: badger
// writes through mmap, and a write fault on a full filesystem is a crash,
// not an error. So data is only written while more than SpaceReserve bytes
// would stay free; below that a fetch fails with ErrNoSpace, its readers
// are answered straight from the upstream without storing (as when the
// size limit leaves no room), the reason shows in user.imgcache.error,
// cached images stay readable and the index keeps working.

// DefaultSpaceReserve is the free space kept for the index.
const DefaultSpaceReserve = 8 << 20

// ErrNoSpace: storing more would leave too little room for the index.
var ErrNoSpace = errors.New("cache filesystem is full")

// readsAround says whether a fetch failed for want of space, so that its
// readers are answered straight from the upstream instead (readDirect).
func readsAround(err error) bool {
	return errors.Is(err, ErrNoRoom) || errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, ErrStorageLost)
}

// claimSpace promises n bytes of the cache filesystem to a range
// request about to be written, if they fit above the reserve together
// with what running requests were promised; release gives them back when
// the request is done. Requests in flight are counted as if none of their
// bytes were written yet: that overcounts, which is the safe side.
func (c *Cache) claimSpace(n int64) (release func(), err error) {
	if err := c.storageLost(); err != nil { // nothing is stored any more (storage.go)
		return nil, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.cfg.Dir, &st); err != nil {
		return func() {}, nil // cannot tell; the write itself will say
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	pending := c.spacePending.Add(n)
	if free-pending < c.cfg.SpaceReserve {
		c.spacePending.Add(-n)
		return nil, fmt.Errorf("%w: %d MiB free, %d MiB about to be written, %d MiB kept for the index",
			ErrNoSpace, free>>20, (pending+(1<<20)-1)>>20, c.cfg.SpaceReserve>>20)
	}
	return func() { c.spacePending.Add(-n) }, nil
}
