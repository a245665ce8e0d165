package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/imgcache/imgcache/cachecore"
)

// toErrno is the one place where cache errors become errno values. (go-fuse's
// own fs.ToErrno turns wrapped errors into ENOSYS, which would be wrong.)
// A failed fetch is EIO: the reader sees an I/O error and the reason is in
// user.imgcache.error.
func toErrno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, cachecore.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	case errors.Is(err, cachecore.ErrPinned): // user.imgcache.pin 0 of an image a glob or alias pins
		return syscall.EBUSY
	default:
		return syscall.EIO
	}
}
