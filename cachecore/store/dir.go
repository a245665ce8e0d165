// Package store keeps what lies in the cache directory besides the
// index: the data files (one sparse file per image version, named by its
// ID), the directory lock, holes punched in files, the guard of free space
// on the filesystem, and the trust in the directory itself: every path is
// opened relative to a checked directory handle, never through a link.
// It knows nothing of images beyond their IDs and sizes.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Trust in the cache directory. The daemon (often root) writes into the
// cache directory and serves its data files as images, so whoever can
// change what a path there leads to can make it overwrite any file (a
// planted `lock -> /etc/shadow`) or serve their bytes as a verified
// image (a planted `data -> /home/them/data`). Hence:
//
//   - The path to the cache directory is walked one component at a time
//     without following anything blindly (OpenDir): each directory
//     on the way must belong to root or to the daemon's user and be
//     writable by nobody else unless sticky (like /tmp, where only an
//     entry's owner may replace it, so the next component must belong to
//     root or the user too); a symbolic link on the way must belong to
//     root or the user. The cache directory itself must belong to the
//     user and be writable by nobody else.
//   - Below it, nothing is followed: every file and directory is opened
//     relative to the handle of a directory already checked, one
//     component at a time with O_NOFOLLOW, and must be a file or
//     directory of the user's that nobody else may write; a file must
//     have no second name (a hard link planted elsewhere would let its
//     maker reach it).
//
// Anything else is refused with an UnsafePathError naming the path.

// UnsafePathError says that a path in (or on the way to) the cache
// directory is not safe to use.
type UnsafePathError struct {
	Path    string
	Problem string // "is a symbolic link; ..."
}

func (e *UnsafePathError) Error() string {
	return fmt.Sprintf("cache directory: %q %s", e.Path, e.Problem)
}

func unsafePath(p, format string, a ...any) error {
	return &UnsafePathError{Path: p, Problem: fmt.Sprintf(format, a...)}
}

// maxSymlinks bounds the symbolic links followed on the way to the cache
// directory, as the kernel does (ELOOP).
const maxSymlinks = 40

// Dir is a checked directory: files below it are opened relative to
// its descriptor, one component at a time, never through a link.
type Dir struct {
	fd   int
	path string // as the user named it: for messages
}

// OpenDir opens dir after checking every component of the way to it
// (see above), creating it and any missing parent (0700) if create is
// set.
func OpenDir(dir string, create bool) (*Dir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %w", err)
	}
	euid := uint32(os.Geteuid())
	type step struct {
		fd   int
		path string
		st   unix.Stat_t
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cache directory: open \"/\": %w", err)
	}
	stack := []step{{fd: root, path: "/"}}
	defer func() {
		for _, s := range stack {
			unix.Close(s.fd)
		}
	}()
	if err := unix.Fstat(root, &stack[0].st); err != nil {
		return nil, fmt.Errorf("cache directory: stat \"/\": %w", err)
	}
	todo := strings.Split(abs, "/")
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				unix.Close(stack[len(stack)-1].fd)
				stack = stack[:len(stack)-1]
			}
			continue
		}
		parent := stack[len(stack)-1]
		if err := checkWay(parent.path, &parent.st, euid); err != nil {
			return nil, err
		}
		p := path.Join(parent.path, name)
		fd, err := unix.Openat(parent.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			if err = unix.Mkdirat(parent.fd, name, 0o700); err == nil || err == unix.EEXIST {
				fd, err = unix.Openat(parent.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("cache directory: %q: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("cache directory: %q: %w", p, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, err := readlinkFd(fd)
			unix.Close(fd)
			if err != nil {
				return nil, fmt.Errorf("cache directory: %q: %w", p, err)
			}
			if st.Uid != 0 && st.Uid != euid {
				return nil, unsafePath(p, "is a symbolic link (to %q) owned by uid %d, who could point it elsewhere", target, st.Uid)
			}
			if links++; links > maxSymlinks {
				return nil, fmt.Errorf("cache directory: %q: %w", p, unix.ELOOP)
			}
			if strings.HasPrefix(target, "/") {
				for _, s := range stack[1:] {
					unix.Close(s.fd)
				}
				stack = stack[:1]
			}
			todo = append(strings.Split(target, "/"), todo...)
		case unix.S_IFDIR:
			stack = append(stack, step{fd: fd, path: p, st: st})
		default:
			unix.Close(fd)
			return nil, fmt.Errorf("cache directory: %q: %w", p, unix.ENOTDIR)
		}
	}
	last := stack[len(stack)-1]
	if err := checkOwn(abs, &last.st, unix.S_IFDIR); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(last.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cache directory: %q: %w", abs, err)
	}
	return &Dir{fd: fd, path: abs}, nil
}

// checkWay checks a directory on the way to the cache directory before
// anything is looked up in it: only root and the user may replace what
// lies below it.
func checkWay(p string, st *unix.Stat_t, euid uint32) error {
	if st.Uid != 0 && st.Uid != euid {
		return unsafePath(p, "belongs to uid %d, who could replace what lies below it", st.Uid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return unsafePath(p, "is writable by others (mode %04o) and not sticky: they could replace what lies below it", st.Mode&0o7777)
	}
	return nil
}

// checkOwn checks something in the cache directory: it must be of the
// kind wanted (unix.S_IFDIR, S_IFREG, S_IFSOCK), the user's, writable by
// nobody else, and, if a file, have no other name.
func checkOwn(p string, st *unix.Stat_t, kind uint32) error {
	euid := uint32(os.Geteuid())
	switch got := st.Mode & unix.S_IFMT; {
	case got == unix.S_IFLNK:
		return unsafePath(p, "is a symbolic link; nothing in the cache directory may be one (remove it)")
	case got != kind:
		return unsafePath(p, "is a %s, not a %s", kindName(got), kindName(kind))
	case st.Uid != euid:
		return unsafePath(p, "belongs to uid %d, not to this user (uid %d)", st.Uid, euid)
	case st.Mode&0o022 != 0:
		return unsafePath(p, "is writable by others (mode %04o); run chmod go-w on it", st.Mode&0o7777)
	case kind == unix.S_IFREG && st.Nlink != 1:
		return unsafePath(p, "has %d hard links; a file in the cache directory must have no other name", st.Nlink)
	}
	return nil
}

func kindName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFIFO:
		return "named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "file of unknown type"
}

func readlinkFd(fd int) (string, error) {
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		got, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if got < n {
			return string(buf[:got]), nil
		}
	}
}

// Close closes the directory's descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Path is the directory's path, as the user named it.
func (d *Dir) Path() string { return d.path }

// Gone says, with an error (ErrStorageLost), that the directory was
// removed or moved away since it was opened.
func (d *Dir) Gone() error { return DirGone(d.fd, d.path) }

func (d *Dir) join(name string) string { return d.path + "/" + name }

// splitName splits a slash-separated name below d into its components,
// refusing anything that could leave d.
func splitName(name string) ([]string, bool) {
	parts := strings.Split(name, "/")
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return nil, false
		}
	}
	return parts, true
}

// walk opens, and checks, the directories of name below d, creating
// missing ones (0700) if create is set. It returns the descriptor of the
// last directory (to be closed by the caller if it is not d.fd) and the
// last component.
func (d *Dir) walk(op, name string, create bool) (dirfd int, last string, err error) {
	parts, ok := splitName(name)
	if !ok {
		return -1, "", &fs.PathError{Op: op, Path: d.join(name), Err: fs.ErrInvalid}
	}
	dirfd = d.fd
	for i, p := range parts[:len(parts)-1] {
		sub := strings.Join(parts[:i+1], "/")
		fd, err := d.openDirAt(dirfd, sub, p, create)
		if dirfd != d.fd {
			unix.Close(dirfd)
		}
		if err != nil {
			return -1, "", err
		}
		dirfd = fd
	}
	return dirfd, parts[len(parts)-1], nil
}

// openDirAt opens and checks directory name in dirfd (sub is its name
// below d, for messages).
func (d *Dir) openDirAt(dirfd int, sub, name string, create bool) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags, 0)
	if err == unix.ENOENT && create {
		if err = unix.Mkdirat(dirfd, name, 0o700); err == nil || err == unix.EEXIST {
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
	}
	if err != nil {
		return -1, d.openError(dirfd, sub, name, unix.S_IFDIR, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: d.join(sub), Err: err}
	}
	if err := checkOwn(d.join(sub), &st, unix.S_IFDIR); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openError explains a failed open of name in dirfd: a symbolic link
// (ELOOP), a file where a directory was wanted (ENOTDIR), a directory
// where a file was (EISDIR), a socket (ENXIO)... is unsafe, not merely
// an error.
func (d *Dir) openError(dirfd int, sub, name string, want uint32, err error) error {
	if err != unix.ENOENT {
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			if cerr := checkOwn(d.join(sub), &st, want); cerr != nil {
				return cerr
			}
		}
	}
	return &fs.PathError{Op: "open", Path: d.join(sub), Err: err}
}

// openDir opens (creating it if asked) a directory below d as a Dir.
func (d *Dir) openDir(name string, create bool) (*Dir, error) {
	dirfd, last, err := d.walk("open", name, create)
	if err != nil {
		return nil, err
	}
	if dirfd != d.fd {
		defer unix.Close(dirfd)
	}
	fd, err := d.openDirAt(dirfd, name, last, create)
	if err != nil {
		return nil, err
	}
	return &Dir{fd: fd, path: d.join(name)}, nil
}

// OpenFile opens a regular file below d (os.OpenFile's flags; no
// O_TRUNC, which would act before the file is checked).
func (d *Dir) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	if flag&os.O_TRUNC != 0 {
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: errors.New("O_TRUNC before the check")}
	}
	dirfd, last, err := d.walk("open", name, false)
	if err != nil {
		return nil, err
	}
	if dirfd != d.fd {
		defer unix.Close(dirfd)
	}
	// O_NONBLOCK: opening a planted FIFO must not hang; it is cleared
	// once the file is known to be a regular file.
	fd, err := unix.Openat(dirfd, last, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, uint32(perm.Perm()))
	if err != nil {
		return nil, d.openError(dirfd, name, last, unix.S_IFREG, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	if err := checkOwn(d.join(name), &st, unix.S_IFREG); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	return os.NewFile(uintptr(fd), d.join(name)), nil
}

// Open opens a regular file below d for reading.
func (d *Dir) Open(name string) (*os.File, error) { return d.OpenFile(name, os.O_RDONLY, 0) }

// MkdirAll makes the directory name below d and its parents (0700).
func (d *Dir) MkdirAll(name string) error {
	sub, err := d.openDir(name, true)
	if err != nil {
		return err
	}
	return sub.Close()
}

// lstat stats name below d without following it (and checks the
// directories on the way).
func (d *Dir) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	dirfd, last, err := d.walk("lstat", name, false)
	if err != nil {
		return st, err
	}
	if dirfd != d.fd {
		defer unix.Close(dirfd)
	}
	if err := unix.Fstatat(dirfd, last, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &fs.PathError{Op: "lstat", Path: d.join(name), Err: err}
	}
	return st, nil
}

// Remove removes the file name below d (a link itself, never its target).
func (d *Dir) Remove(name string) error {
	dirfd, last, err := d.walk("remove", name, false)
	if err != nil {
		return err
	}
	if dirfd != d.fd {
		defer unix.Close(dirfd)
	}
	if err := unix.Unlinkat(dirfd, last, 0); err != nil {
		return &fs.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	return nil
}

// Rename renames the entry from of d to to (single names, in d).
func (d *Dir) Rename(from, to string) error {
	if _, ok := splitName(from); !ok || strings.Contains(from, "/") {
		return &fs.PathError{Op: "rename", Path: d.join(from), Err: fs.ErrInvalid}
	}
	if _, ok := splitName(to); !ok || strings.Contains(to, "/") {
		return &fs.PathError{Op: "rename", Path: d.join(to), Err: fs.ErrInvalid}
	}
	return unix.Renameat(d.fd, from, d.fd, to)
}

// readDirNames lists d's own entries.
func (d *Dir) readDirNames() ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// CheckIndexDir checks badger's directory before badger opens it, by
// path: the way to it as for the cache directory, and it and everything
// in it as for anything in the cache directory (dir.go). Nobody else
// can change them between the check and badger's opens, since nobody
// else may write the directories on the way. It creates the directory
// (0700) if missing.
func CheckIndexDir(dir string) error {
	parent, err := OpenDir(filepath.Dir(dir), false)
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
func (d *Dir) checkTree() error {
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

// ErrStorageLost: the cache directory, or its data or index directory,
// was removed or moved away while mounted.
var ErrStorageLost = errors.New("cache storage lost")

// DirGone says, with an error (ErrStorageLost), that the directory open
// as fd is no longer the one at path: removed, or moved away.
func DirGone(fd int, path string) error {
	var held, now unix.Stat_t
	if err := unix.Fstat(fd, &held); err != nil {
		return err
	}
	if held.Nlink == 0 {
		return fmt.Errorf("%w: %s was removed", ErrStorageLost, path)
	}
	if err := unix.Lstat(path, &now); err != nil || now.Dev != held.Dev || now.Ino != held.Ino {
		return fmt.Errorf("%w: %s was moved or replaced", ErrStorageLost, path)
	}
	return nil
}
