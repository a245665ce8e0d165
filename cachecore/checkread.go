package cachecore

import (
	"context"
	"errors"
	"hash"
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/time/rate"

	"github.com/imgcache/imgcache/cachecore/store"
)

// How checks read data files. With O_DIRECT where the filesystem allows
// it: a check then reads what is on the disk (not a good copy the kernel
// still caches), and it neither evicts the pages readers use from the
// kernel's cache nor fills it with pages nobody asked for, which is what
// lets the scrub run by default. The kernel writes back pages that are
// dirty before a direct read, so a write by another program is seen.

// directAlign is the alignment O_DIRECT wants of buffers, offsets and
// lengths (the largest logical block size in use). Chunk sizes are
// multiples of it.
const directAlign = 4096

// checker is what one check (of one image or a whole pass) reads with.
type checker struct {
	pace    *rate.Limiter // nil: as fast as the disk and the hash go
	workers int           // chunks hashed at once
	bufs    [][]byte      // one per worker, pieceSize bytes, aligned for O_DIRECT
	reports bool          // keep one ImageReport per image (not in the scrub: memory flat in images)
}

// maxCheckWorkers bounds the chunks an unpaced check hashes at once.
const maxCheckWorkers = 8

// newChecker returns a checker reading at most bytesPerSec, on one core
// (the scrub), or, if bytesPerSec is 0, as fast as it can on every core
// (a check someone waits for).
func newChecker(bytesPerSec int64) *checker {
	k := &checker{workers: 1}
	if bytesPerSec > 0 {
		k.pace = rate.NewLimiter(rate.Limit(bytesPerSec), max(int(bytesPerSec), pieceSize))
	} else {
		k.workers = min(runtime.GOMAXPROCS(0), maxCheckWorkers)
	}
	for range k.workers {
		k.bufs = append(k.bufs, alignedBuf(pieceSize))
	}
	return k
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

// checkFile is a data file opened for a check.
type checkFile struct {
	f      *os.File
	direct bool
}

// open opens an image's data file for a check, with O_DIRECT if the
// filesystem takes it (a first read tells: some accept the flag at open
// and refuse the reads).
func (k *checker) open(s *store.Store, id string) (*checkFile, error) {
	f, err := s.OpenFile(id, os.O_RDONLY|syscall.O_DIRECT)
	if err == nil {
		_, err = f.ReadAt(k.bufs[0][:directAlign], 0)
		if err == nil || err == io.EOF {
			return &checkFile{f: f, direct: true}, nil
		}
		f.Close()
	}
	if !errors.Is(err, syscall.EINVAL) {
		return nil, err
	}
	f, err = s.OpenFile(id, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return &checkFile{f: f}, nil
}

func (f *checkFile) Close() error { return f.f.Close() }

// hashRange writes bytes [off, off+n) of the file to h, reading into
// buf, paced by pace (nil: not paced).
func (f *checkFile) hashRange(ctx context.Context, h hash.Hash, off, n int64, buf []byte, pace *rate.Limiter) error {
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := int(min(int64(len(buf)), n-done))
		p, err := f.readPiece(buf, off+done, want)
		if err != nil {
			return err
		}
		h.Write(p)
		done += int64(want)
		if pace != nil {
			if err := pace.WaitN(ctx, want); err != nil {
				return paceError{err}
			}
		}
	}
	return nil
}

// paceError: the check stops because ctx ends before its next read is
// due. Not a fault of the data.
type paceError struct{ err error }

func (e paceError) Error() string { return e.err.Error() }
func (e paceError) Unwrap() error { return e.err }

// readPiece reads want bytes at off into buf (off is aligned). A direct
// read asks for whole blocks; at the end of the file it comes back short.
func (f *checkFile) readPiece(buf []byte, off int64, want int) ([]byte, error) {
	ask := want
	if f.direct {
		ask = (want + directAlign - 1) / directAlign * directAlign
	}
	k, err := f.f.ReadAt(buf[:ask], off)
	if k >= want {
		return buf[:want], nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}
