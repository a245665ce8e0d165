package cachecore

import (
	"errors"
	"io/fs"
	"os"
	"path"
)

// store keeps the data files: one sparse file per image version, named by
// the image ID (a hex hash), fanned out by its first two digits. No name
// from an upstream ever becomes a path, and os.Root keeps every access
// inside the data directory even if an ID were malformed.
type store struct {
	root *os.Root
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &store{root: root}, nil
}

func (s *store) close() error { return s.root.Close() }

func dataName(id string) string { return path.Join(id[:2], id) }

// open opens (creating if needed) the data file of an image of the given
// size. A new file is a hole of the full size: space is only allocated as
// chunks are written, which is what du shows.
func (s *store) open(id string, size int64) (*os.File, error) {
	name := dataName(id)
	f, err := s.root.OpenFile(name, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := s.root.MkdirAll(path.Dir(name), 0o700); err != nil {
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
	_, err := s.root.Stat(dataName(id))
	return err == nil
}

func (s *store) remove(id string) error {
	err := s.root.Remove(dataName(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ids lists the IDs of every data file, for reconciling with the index.
func (s *store) ids() ([]string, error) {
	var ids []string
	err := fs.WalkDir(s.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && path.Dir(p) != "." {
			ids = append(ids, d.Name())
		}
		return nil
	})
	return ids, err
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
