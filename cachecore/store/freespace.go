package store

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
)

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

// FreeSpace guards the free space of the cache filesystem for the index.
type FreeSpace struct {
	// read only
	dir     string
	reserve int64

	pending atomic.Int64 // bytes promised to range requests being written
}

// NewFreeSpace guards the filesystem of dir, keeping reserve bytes free
// (none if reserve < 0).
func NewFreeSpace(dir string, reserve int64) *FreeSpace {
	return &FreeSpace{dir: dir, reserve: reserve}
}

// Claim promises n bytes of the cache filesystem to a range
// request about to be written, if they fit above the reserve together
// with what running requests were promised; release gives them back when
// the request is done. Requests in flight are counted as if none of their
// bytes were written yet: that overcounts, which is the safe side.
func (g *FreeSpace) Claim(n int64) (release func(), err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &st); err != nil {
		return func() {}, nil // cannot tell; the write itself will say
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	pending := g.pending.Add(n)
	if free-pending < g.reserve {
		g.pending.Add(-n)
		return nil, fmt.Errorf("%w: %d MiB free, %d MiB about to be written, %d MiB kept for the index",
			ErrNoSpace, free>>20, (pending+(1<<20)-1)>>20, g.reserve>>20)
	}
	return func() { g.pending.Add(-n) }, nil
}
