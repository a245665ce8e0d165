package fs

import "strings"

// Evicted tells the kernel that the attributes of the images called names
// changed (their data was dropped: st_blocks is 0 now), since it may keep
// a complete image's attributes for long. Only inodes the kernel knows
// have anything to forget. The notifications go from a goroutine of their
// own: an eviction can happen inside a request (a read that makes room),
// and a notification must not wait on the request that causes it.
func (r *Root) Evicted(names []string) {
	go func() {
		for _, name := range names {
			n := r.EmbeddedInode()
			for _, part := range strings.Split(name, "/") {
				if n = n.GetChild(part); n == nil {
					break
				}
			}
			if n != nil {
				n.NotifyContent(-1, 0) // attributes only; the pages stay valid
			}
		}
	}()
}
