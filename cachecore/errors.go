package cachecore

import (
	"errors"
	"fmt"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/store"
)

var (
	// ErrNotFound: no image or directory of that name in the catalog.
	ErrNotFound = errors.New("no such image")
	// ErrClosed: the cache has been closed.
	ErrClosed = errors.New("cache is closed")
	// ErrInvalid: the image's bytes did not match its published digest.
	ErrInvalid = errors.New("image failed verification")
	// ErrDamaged: cached bytes no longer match the checksums recorded
	// when they were verified.
	ErrDamaged = errors.New("cached data damaged")
	// ErrLocked: another process uses the cache directory.
	ErrLocked = store.ErrLocked
	// ErrNoSpace: storing more would leave too little room on the cache
	// filesystem for the index.
	ErrNoSpace = store.ErrNoSpace
	// ErrStorageLost: the cache directory, or its data or index
	// directory, was removed or moved away while mounted (storage.go).
	ErrStorageLost = store.ErrStorageLost
	// ErrIndexDamaged: the index cannot be read; mount --rebuild-index
	// rebuilds it (rebuild.go).
	ErrIndexDamaged = index.ErrDamaged
	// ErrIndexHeld: index writes are held back (a full filesystem) and
	// written later.
	ErrIndexHeld = index.ErrHeld
)

// Error is the failure of one operation on one image. It wraps the cause
// so that callers (the fs errno table) can test it with errors.Is.
type Error struct {
	Op   string // "fetch", "open", "verify", ...
	Name string // image name, empty when not about one image
	Err  error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s %q: %v", e.Op, e.Name, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// UnsafePathError says that a path in (or on the way to) the cache
// directory is not safe to use (store/dir.go).
type UnsafePathError = store.UnsafePathError

// DefaultSpaceReserve is the free space on the cache filesystem that data
// never takes, kept for the index.
const DefaultSpaceReserve = store.DefaultSpaceReserve
