package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// workSuffix marks a data file being written whole (Put) beside the one
// it replaces; one left by a crash is removed by Scan.
const workSuffix = ".work"

// Put stores data as the whole data file of an image: written to a work
// file beside it, synced and renamed over it, so that the data file is
// either as it was or whole with data, never partly written (stargz's
// Writer.Commit). The rename is durable once SyncDirs has synced its
// directory (one sync of each directory for many Puts: a sync costs a
// journal commit). It returns the data file, open for reading, for the
// caller to measure and close; a failure (ENOSPC, EIO) leaves no work
// file behind. Puts of different IDs may run at once.
func (s *Store) Put(id string, data []byte) (*os.File, error) {
	name := DataName(id)
	if name == "" {
		return nil, &fs.PathError{Op: "put", Path: s.root.join(id), Err: fs.ErrInvalid}
	}
	fan, err := s.root.openDir(name[:2], true)
	if err != nil {
		return nil, err
	}
	defer fan.Close()
	work := id + workSuffix
	if err := fan.Remove(work); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, err := fan.OpenFile(work, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		fan.Remove(work)
		return nil, err
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := fan.Rename(work, id); err != nil {
		return fail(&fs.PathError{Op: "rename", Path: fan.join(work), Err: err})
	}
	return f, nil
}

// SyncDirs makes the renames of the Puts of ids durable: it syncs the
// directory of each.
func (s *Store) SyncDirs(ids []string) error {
	done := map[string]bool{}
	for _, id := range ids {
		name := DataName(id)
		if name == "" || done[name[:2]] {
			continue
		}
		done[name[:2]] = true
		fan, err := s.root.openDir(name[:2], false)
		if err != nil {
			return err
		}
		err = unix.Fsync(fan.fd)
		fan.Close()
		if err != nil {
			return &fs.PathError{Op: "sync", Path: fan.path, Err: err}
		}
	}
	return nil
}

// isWork says whether name (in a fan-out directory) is a work file of
// Put, and of which ID.
func isWork(name string) bool {
	id, ok := strings.CutSuffix(name, workSuffix)
	return ok && ValidID(id)
}

// removeWork removes a work file that a crash left (Scan).
func removeWork(dir *Dir, name string) error {
	st, err := dir.lstat(name)
	if err == nil {
		err = checkOwn(dir.join(name), &st, unix.S_IFREG)
	}
	if err == nil {
		err = dir.Remove(name)
	}
	if err != nil {
		return fmt.Errorf("removing an unfinished data file: %w", err)
	}
	return nil
}
