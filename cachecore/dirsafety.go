package cachecore

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// checkDirSafe refuses a cache directory that someone else could write
// to: they could plant data files or an index whose bytes the mount would
// then serve as an image's. The directory is created 0700; an existing one
// must belong to this user and not be writable by group or others.
func checkDirSafe(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cache directory %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("cache directory %s is writable by others (mode %04o); run chmod 700 on it", dir, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("cache directory %s belongs to uid %d, not to this user (uid %d)", dir, st.Uid, os.Geteuid())
	}
	return nil
}

// Disk space. A full cache filesystem must not break the index: badger
// writes through mmap, and a write fault on a full filesystem is a crash,
// not an error. So data is only written while more than SpaceReserve bytes
// would stay free; below that a fetch fails with ErrNoSpace (and the
// reader gets EIO, the reason in user.imgcache.error) while cached images
// stay readable and the index keeps working.

// DefaultSpaceReserve is the free space kept for the index.
const DefaultSpaceReserve = 8 << 20

// ErrNoSpace: storing more would leave too little room for the index.
var ErrNoSpace = errors.New("cache filesystem is full")

// checkRoom says whether n more bytes of data fit above the reserve.
func (c *Cache) checkRoom(n int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(c.cfg.Dir, &st); err != nil {
		return nil // cannot tell; the write itself will say
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free-n < c.cfg.SpaceReserve {
		return fmt.Errorf("%w: %d MiB free, %d MiB needed plus %d MiB kept for the index",
			ErrNoSpace, free>>20, (n+(1<<20)-1)>>20, c.cfg.SpaceReserve>>20)
	}
	return nil
}
