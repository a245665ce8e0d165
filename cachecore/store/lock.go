package store

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrLocked: another process uses the cache directory.
var ErrLocked = errors.New("cache directory is in use")

// Lock takes an exclusive lock on the cache directory for the life of
// the process; closing the file it returns lets go. flock locks die with their process, so a daemon killed with
// -9 never leaves a lock behind.
//
// The lock file is opened like every file in the cache directory
// (dir.go): a planted link must not make the daemon write its pid
// into another file.
func (dir *Dir) Lock() (*os.File, error) {
	f, err := dir.OpenFile("lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var unsafe *UnsafePathError
		if errors.As(err, &unsafe) {
			return nil, err
		}
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b := make([]byte, 32)
		n, _ := f.ReadAt(b, 0)
		f.Close()
		holder := strings.TrimSpace(string(b[:n]))
		if _, perr := strconv.Atoi(holder); perr != nil {
			holder = "another process"
		} else {
			holder = "pid " + holder
		}
		return nil, fmt.Errorf("%w: %q is used by %s", ErrLocked, dir.path, holder)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}
