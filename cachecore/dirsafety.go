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
	return errors.Is(err, ErrNoRoom) || errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC)
}

// claimSpace promises n bytes of the cache filesystem to a range
// request about to be written, if they fit above the reserve together
// with what running requests were promised; release gives them back when
// the request is done. Requests in flight are counted as if none of their
// bytes were written yet: that overcounts, which is the safe side.
func (c *Cache) claimSpace(n int64) (release func(), err error) {
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
