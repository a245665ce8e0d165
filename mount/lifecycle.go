package mount

import (
	"sync/atomic"

	"github.com/imgcache/imgcache/fs"
)

// evictNotifier passes the cache's evictions on to the filesystem, once
// there is one (the cache opens, and may evict, before the mount).
type evictNotifier struct{ root atomic.Pointer[fs.Root] }

func (n *evictNotifier) evicted(names []string) {
	if r := n.root.Load(); r != nil {
		r.Evicted(names)
	}
}
