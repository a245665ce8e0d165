package cachecore

import (
	"errors"
	"fmt"
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
	ErrLocked = errors.New("cache directory is in use")
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
