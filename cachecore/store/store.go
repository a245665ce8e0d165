package store

import (
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// Store keeps the data files: one sparse file per image version, named by
// the image ID (a hex hash), fanned out by its first two digits, in the
// cache directory's data/. No name from an upstream ever becomes a path,
// and every file is opened relative to the checked data directory, one
// component at a time, never through a link (dir.go).
type Store struct {
	root *Dir
}

// Open opens (creating it if needed) the data directory of the cache
// directory cache.
func Open(cache *Dir) (*Store, error) {
	root, err := cache.openDir("data", true)
	if err != nil {
		return nil, err
	}
	return &Store{root: root}, nil
}

// Close closes the data directory.
func (s *Store) Close() error { return s.root.Close() }

// Gone says, with an error (ErrStorageLost), that the data directory was
// removed or moved away.
func (s *Store) Gone() error { return s.root.Gone() }

// ValidID says whether id is an image ID as the cache makes them: 64
// lowercase hex digits.
func ValidID(id string) bool {
	return len(id) == 2*sha256.Size && isLowerHex(id)
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// DataName is the name of an image's data file in the data directory; ""
// (which no open accepts) for a malformed ID.
func DataName(id string) string {
	if !ValidID(id) {
		return ""
	}
	return id[:2] + "/" + id
}

// Open opens (creating if needed) the data file of an image of the given
// size. A new file is a hole of the full size: space is only allocated as
// chunks are written, which is what du shows.
func (s *Store) Open(id string, size int64) (*os.File, error) {
	name := DataName(id)
	f, err := s.root.OpenFile(name, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.root.MkdirAll(path.Dir(name)); err != nil {
			return nil, err
		}
		f, err = s.root.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		if err == nil {
			err = f.Truncate(size)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// Exists reports whether the image has a data file.
func (s *Store) Exists(id string) bool {
	_, err := s.root.lstat(DataName(id))
	return err == nil
}

// Remove deletes the image's data file, if there is one.
func (s *Store) Remove(id string) error {
	err := s.root.Remove(DataName(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// DataFile is a data file found by Scan.
type DataFile struct {
	ID    string
	Alloc int64 // allocated bytes (st_blocks)
}

// Scan lists the data files for reconciling with the index and measuring
// usage. What is where imgcache would put a data file or a fan-out
// directory must be one (scan fails on a link, another user's file, a
// file others may write...: dir.go); anything else is a stray, never
// opened: it is named to stray (if not nil) and left alone. A work file
// of Put that a crash left is removed.
func (s *Store) Scan(stray func(name string)) ([]DataFile, error) {
	if stray == nil {
		stray = func(string) {}
	}
	fans, err := s.root.readDirNames()
	if err != nil {
		return nil, err
	}
	slices.Sort(fans)
	var files []DataFile
	for _, fan := range fans {
		if len(fan) != 2 || !isLowerHex(fan) {
			stray(fan)
			continue
		}
		dir, err := s.root.openDir(fan, false)
		if err != nil {
			return nil, err
		}
		names, err := dir.readDirNames()
		if err != nil {
			dir.Close()
			return nil, err
		}
		slices.Sort(names)
		for _, id := range names {
			if isWork(id) && id[:2] == fan {
				if err := removeWork(dir, id); err != nil {
					dir.Close()
					return nil, err
				}
				continue
			}
			if !ValidID(id) || id[:2] != fan {
				stray(fan + "/" + id)
				continue
			}
			st, err := dir.lstat(id)
			if err == nil {
				err = checkOwn(dir.join(id), &st, unix.S_IFREG)
			}
			if err != nil {
				dir.Close()
				return nil, err
			}
			files = append(files, DataFile{ID: id, Alloc: st.Blocks * 512})
		}
		dir.Close()
	}
	return files, nil
}

// Sync flushes an image's data file to disk. It opens the file anew: the
// handles that wrote it may be closed by now, and fsync on any descriptor
// flushes the file.
func (s *Store) Sync(id string) error {
	f, err := s.root.Open(DataName(id))
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Punch drops every byte of an image's data file, keeping its size (a
// reader of the file at that moment sees zeros, never an early end).
func (s *Store) Punch(id string, size int64) error {
	return s.PunchRange(id, 0, size)
}

// PunchRange drops bytes [off, off+n) of an image's data file, keeping
// its size: a hole reads as zeros and takes no space.
func (s *Store) PunchRange(id string, off, n int64) error {
	f, err := s.root.OpenFile(DataName(id), syscall.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	const punchHole, keepSize = 0x02, 0x01 // FALLOC_FL_*
	err = syscall.Fallocate(int(f.Fd()), punchHole|keepSize, off, n)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		// A filesystem without holes: overwrite with zeros.
		_, err = io.Copy(io.NewOffsetWriter(f, off), io.LimitReader(zeros{}, n))
	}
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// OpenFile opens an image's data file with flag (os.OpenFile's; the
// file must exist), for reading it whole: verification, checks.
func (s *Store) OpenFile(id string, flag int) (*os.File, error) {
	return s.root.OpenFile(DataName(id), flag, 0)
}

// Allocated is a file's allocated bytes (st_blocks), not its apparent
// size: what a sparse data file takes on disk.
func Allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
