package fs

import (
	"strings"
	"syscall"

	"github.com/imgcache/imgcache/cachecore"
)

// Settable attributes: the only writes the filesystem takes, requests to
// the cache rather than data.
//
//	setfattr -n user.imgcache.pin -v 1 FILE       pin its name (0: unpin; EBUSY if a glob or alias pins it); see user.imgcache.pinned
//	setfattr -n user.imgcache.prefetch -v 1 FILE  queue for prefetch (0: dequeue); see user.imgcache.queued
//
// A value other than 0 or 1 is EINVAL; any other name is EPERM, as before.
var settableXattrs = map[string]func(c *cachecore.Cache, img *cachecore.Image, on bool) error{
	"pin": func(c *cachecore.Cache, img *cachecore.Image, on bool) error { return c.PinImage(img, on) },
	"prefetch": func(c *cachecore.Cache, img *cachecore.Image, on bool) error {
		if on {
			return c.QueueImage(img)
		}
		return c.DequeueImage(img)
	},
}

func setImageXattr(c *cachecore.Cache, img *cachecore.Image, attr string, data []byte) syscall.Errno {
	name, ok := strings.CutPrefix(attr, xattrPrefix)
	set := settableXattrs[name]
	if !ok || set == nil {
		return syscall.EPERM
	}
	var on bool
	switch strings.TrimSpace(string(data)) {
	case "1":
		on = true
	case "0":
		on = false
	default:
		return syscall.EINVAL
	}
	return toErrno(set(c, img, on))
}

func boolValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
