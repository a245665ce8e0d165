package control

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// maxSunPath is the longest path a unix socket address holds (108 bytes
// with the terminating NUL on Linux).
const maxSunPath = 107

// listenUnix listens on the socket at path, even when path is too long for
// a socket address (deep cache directories, test temp dirs): then it goes
// through /proc/self/fd of the directory, which the kernel resolves to the
// same place.
func listenUnix(path string) (net.Listener, error) {
	short, done, err := shortPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	ln, err := net.Listen("unix", short)
	if err != nil {
		return nil, err
	}
	if err := checkSocket(path); err != nil {
		ln.Close()
		return nil, err
	}
	// The listener would unlink by its short name, which is gone after
	// done; Server.Close removes the socket by its real path.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	return ln, nil
}

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	short, done, err := shortPath(path)
	if err != nil {
		return nil, err
	}
	defer done()
	var d net.Dialer
	return d.DialContext(ctx, "unix", short)
}

// shortPath returns a name for path that fits in a socket address, and a
// function to call once that name has been used.
func shortPath(path string) (string, func(), error) {
	if len(path) <= maxSunPath {
		return path, func() {}, nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, err
	}
	short := "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())) + "/" + filepath.Base(path)
	return short, func() { dir.Close() }, nil
}

// checkSocket makes sure that path is the socket just made, this user's,
// before anything is done to it by name (the chmod that follows would
// follow a link).
func checkSocket(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	uid := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid = int(st.Uid)
	}
	if fi.Mode().Type() != os.ModeSocket || uid != os.Geteuid() {
		return fmt.Errorf("%q is not the socket just made (mode %v, uid %d)", path, fi.Mode(), uid)
	}
	return nil
}
