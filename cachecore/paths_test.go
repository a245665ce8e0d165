package cachecore

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/imgcache/imgcache/cachecore/store"
)

// Names in the cache directory, for tests that plant or damage files.

func dataName(id string) string { return store.DataName(id) }

func validID(id string) bool { return store.ValidID(id) }

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func allocated(fi fs.FileInfo) int64 { return store.Allocated(fi) }

// dirAllocated sums the allocated bytes of the files under dir.
func dirAllocated(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += allocated(fi)
			}
		}
		return nil
	})
	return n
}

// copyDir copies the regular files of a flat directory (badger's).
func copyDir(from, to string) error {
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
