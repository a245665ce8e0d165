package upstream

import (
	"io"
	"os"
)

// Splicer is implemented by the reader Fetch returns when the reply's
// bytes can be moved into a file by the kernel (splice(2)) without
// passing through the process: a plain-HTTP reply. A cache that writes
// what it fetches into a file saves two copies of every byte.
type Splicer interface {
	io.Reader
	// CanSplice reports whether this reply can be spliced (a body of a
	// known length on a connection of the upstream's own); if not, it
	// is read.
	CanSplice() bool
	// SpliceTo moves the next n bytes the reader would yield into f at
	// off, with the checks and errors of Read, and returns how many it
	// moved. It may be mixed with Read. Each write into f (not the waits
	// for the connection) is made by calling write, if it is not nil,
	// with the write: a caller may bracket its writes (cachecore tells
	// its own from others' by the file's ctime).
	SpliceTo(f *os.File, off, n int64, write func(do func() error) error) (int64, error)
}

// SplicerOf is r as a Splicer if it is one that can splice, else nil.
func SplicerOf(r io.Reader) Splicer {
	if s, ok := r.(Splicer); ok && s.CanSplice() {
		return s
	}
	return nil
}
