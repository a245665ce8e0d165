package index

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
)

// ReadAside reads the index in dir whole without changing it, for a
// command that runs without the daemon. It opens the index read-only; if
// badger refuses (another process holds it, or a daemon was killed and
// its logs need replaying, which read-only mode cannot do) it copies the
// index to a temporary directory and reads the copy (copied).
func ReadAside(dir string) (Loaded, bool, error) {
	var parts [LoadParts][]Record
	l, copied, err := ReadAsideEach(dir, func() { parts = [LoadParts][]Record{} }, func(p int, r *Record) error {
		parts[p] = append(parts[p], *r)
		return nil
	})
	for _, recs := range parts {
		l.Records = append(l.Records, recs...)
	}
	return l, copied, err
}

// ReadAsideEach is ReadAside handing each record to each as it is
// decoded (LoadEach: from several goroutines at once). begin is called
// before each attempt: a failed read in place is followed by a read of a
// copy, which hands over the same records again.
func ReadAsideEach(dir string, begin func(), each func(part int, r *Record) error) (l Loaded, copied bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return Loaded{}, false, fmt.Errorf("no cache index in %s: %w", filepath.Dir(dir), err)
	}
	begin()
	l, err = readAt(dir, true, each)
	if err == nil {
		return l, false, nil
	}
	tmp, cerr := os.MkdirTemp("", "imgcache-index-")
	if cerr != nil {
		return Loaded{}, false, errors.Join(err, cerr)
	}
	defer os.RemoveAll(tmp)
	if cerr := copyDir(dir, tmp); cerr != nil {
		return Loaded{}, false, fmt.Errorf("read index %s: %v; copying it: %w", dir, err, cerr)
	}
	begin()
	l, cerr = readAt(tmp, false, each)
	if cerr != nil {
		return Loaded{}, false, fmt.Errorf("read index %s: %v; reading a copy: %w", dir, err, cerr)
	}
	return l, true, nil
}

// readAt reads the index in dir whole.
func readAt(dir string, readOnly bool, each func(part int, r *Record) error) (Loaded, error) {
	opts := badger.DefaultOptions(dir).
		WithReadOnly(readOnly).
		WithLogger(badgerLogger{slog.New(slog.DiscardHandler)}).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2)
	if err := checkTables(dir, opts); err != nil { // a damaged table panics in badger (damage.go)
		return Loaded{}, err
	}
	db, err := badger.Open(opts)
	if err != nil {
		return Loaded{}, err
	}
	defer db.Close()
	return (&Index{db: db, dir: dir}).LoadEach(each)
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
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil &&
			!errors.Is(err, fs.ErrNotExist) { // a file the daemon just deleted
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
