package cachecore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
)

// IndexView is what a cache directory's index says when no daemon serves
// it: the catalog as last saved, with each image's state as of the last
// flush.
type IndexView struct {
	Images      []Info // sorted by name; Source is empty
	Source      string // the upstream URL, credentials removed
	RefreshedAt time.Time
	// Copied says the index could not be opened in place (a daemon
	// holds it, or one died without closing it) and a copy was read.
	Copied bool
}

// ReadIndex reads the index of the cache in cacheDir without changing it.
// It opens the index read-only; if badger refuses (another process holds
// it, or a daemon was killed and its logs need replaying, which read-only
// mode cannot do) it copies the index to a temporary directory and reads
// the copy.
func ReadIndex(cacheDir string) (IndexView, error) {
	dir := filepath.Join(cacheDir, "index")
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); err != nil {
		return IndexView{}, fmt.Errorf("no cache index in %s: %w", cacheDir, err)
	}
	v, err := readIndexAt(dir, true)
	if err == nil {
		return v, nil
	}
	tmp, cerr := os.MkdirTemp("", "imgcache-index-")
	if cerr != nil {
		return IndexView{}, errors.Join(err, cerr)
	}
	defer os.RemoveAll(tmp)
	if cerr := copyDir(dir, tmp); cerr != nil {
		return IndexView{}, fmt.Errorf("read index %s: %v; copying it: %w", dir, err, cerr)
	}
	v, cerr = readIndexAt(tmp, false)
	if cerr != nil {
		return IndexView{}, fmt.Errorf("read index %s: %v; reading a copy: %w", dir, err, cerr)
	}
	v.Copied = true
	return v, nil
}

func readIndexAt(dir string, readOnly bool) (IndexView, error) {
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
	if err := checkTables(dir, opts); err != nil { // a damaged table panics in badger (indexdamage.go)
		return IndexView{}, err
	}
	db, err := badger.Open(opts)
	if err != nil {
		return IndexView{}, err
	}
	defer db.Close()
	l, err := (&index{db: db}).load()
	if err != nil {
		return IndexView{}, err
	}
	v := IndexView{Source: l.catalog.Source, RefreshedAt: l.catalog.RefreshedAt}
	for _, r := range l.records {
		if !r.Listed || r.check() != nil {
			continue
		}
		n := chunkmap.Chunks(r.Size, r.ChunkSize)
		present, _ := chunkmap.Unmarshal(l.maps[r.ID], n)
		img := newImage(nil, r, present)
		v.Images = append(v.Images, Info{
			Name:        r.Name,
			Size:        r.Size,
			ModTime:     r.ModTime,
			Digest:      r.Digest,
			State:       img.stateLocked(),
			CachedBytes: img.cachedBytesLocked(),
			Hits:        r.Hits,
			LastAccess:  r.LastAccess,
			LastError:   r.LastError,
			LastErrorAt: r.LastErrorAt,
			Pinned:      r.Pinned,
			Queued:      !r.QueuedAt.IsZero(),
		})
	}
	slices.SortFunc(v.Images, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	return v, nil
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
