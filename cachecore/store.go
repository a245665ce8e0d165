package cachecore

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// store keeps the data files: one sparse file per image version, named by
// the image ID (a hex hash), fanned out by its first two digits. No name
// from an upstream ever becomes a path, and every file is opened relative
// to the checked data directory, one component at a time, never through a
// link (safedir.go).
type store struct {
	root *safeDir
}

func openStore(cache *safeDir) (*store, error) {
	root, err := cache.openDir("data", true)
	if err != nil {
		return nil, err
	}
	return &store{root: root}, nil
}

func (s *store) close() error { return s.root.Close() }

// validID says whether id is an image ID as imageID makes them: 64
// lowercase hex digits.
func validID(id string) bool {
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

// dataName is the name of an image's data file in the data directory; ""
// (which no open accepts) for a malformed ID.
func dataName(id string) string {
	if !validID(id) {
		return ""
	}
	return id[:2] + "/" + id
}

// open opens (creating if needed) the data file of an image of the given
// size. A new file is a hole of the full size: space is only allocated as
// chunks are written, which is what du shows.
func (s *store) open(id string, size int64) (*os.File, error) {
	name := dataName(id)
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

// exists reports whether the image has a data file.
func (s *store) exists(id string) bool {
	_, err := s.root.lstat(dataName(id))
	return err == nil
}

func (s *store) remove(id string) error {
	err := s.root.Remove(dataName(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// dataFile is a data file found by scan.
type dataFile struct {
	id    string
	alloc int64 // allocated bytes (st_blocks)
}

// scan lists the data files for reconciling with the index and measuring
// usage. What is where imgcache would put a data file or a fan-out
// directory must be one (scan fails on a link, another user's file, a
// file others may write...: safedir.go); anything else is a stray, never
// opened: it is named to stray (if not nil) and left alone.
func (s *store) scan(stray func(name string)) ([]dataFile, error) {
	if stray == nil {
		stray = func(string) {}
	}
	fans, err := s.root.readDirNames()
	if err != nil {
		return nil, err
	}
	slices.Sort(fans)
	var files []dataFile
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
			if !validID(id) || id[:2] != fan {
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
			files = append(files, dataFile{id: id, alloc: st.Blocks * 512})
		}
		dir.Close()
	}
	return files, nil
}

// sync flushes an image's data file to disk. It opens the file anew: the
// handles that wrote it may be closed by now, and fsync on any descriptor
// flushes the file.
func (s *store) sync(id string) error {
	f, err := s.root.Open(dataName(id))
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// punch drops every byte of an image's data file, keeping its size (a
// reader of the file at that moment sees zeros, never an early end).
func (s *store) punch(id string, size int64) error {
	return s.punchRange(id, 0, size)
}
