package cachecore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Rebuilding a damaged index (Config.RebuildIndex; mount --rebuild-index).
// Without it a damaged index stops the start (indexdamage.go) and nothing
// is touched; with it, and only if the index is damaged:
//
//   - The upstream is listed first: without its catalog no data file can
//     be named, so if that fails nothing changes.
//   - What can be read of the damaged index is salvaged: every table that
//     passes its checksums, and its logs (replayed on a copy). Only chunk
//     sums are kept from it (and chunk sizes from its image records):
//     nothing else there can vouch for bytes.
//   - It is moved aside, to index.damaged-<time> in the cache directory,
//     for a post-mortem (delete it when done), and a new index is made.
//   - Each data file of a listed image keeps the chunks it can vouch for:
//     with salvaged sums, each chunk that hashes to its sum; without, for
//     an image with a digest whose file is whole, all of it if it hashes
//     to the digest. Every other data file is deleted, and fetched again
//     when read: bytes nobody can vouch for are never served.
//   - Hits, pins, the prefetch queue and past errors start afresh.

// rebuildIndex rebuilds the index of the cache, which damage says is
// damaged. The store is open; the index is not.
func (c *Cache) rebuildIndex(damage error) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.InitialListTimeout)
	entries, err := c.up.List(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("%w; rebuilding it needs the upstream's catalog, and listing it failed (nothing was changed): %v", damage, err)
	}
	entries = c.acceptable(entries)
	dir := filepath.Join(c.cfg.Dir, "index")
	salvaged := salvage(dir, c.log)

	aside := "index.damaged-" + c.now().UTC().Format("20060102T150405Z")
	if err := c.dir.Rename("index", aside); err != nil {
		return fmt.Errorf("moving the damaged index aside to %s: %w", aside, err)
	}
	idx, err := openIndex(dir, c.log)
	if err != nil {
		return err
	}
	defer idx.close()

	now := c.now()
	var b batch
	var kept, bySums, byDigest, dropped, chunks int
	for _, e := range entries {
		id := c.imageID(e)
		r := record{ID: id, Name: e.Name, Size: e.Size, ModTime: e.ModTime, ETag: e.ETag,
			Digest: e.Digest, ChunkSize: c.cfg.ChunkSize, Listed: true, Added: now}
		if c.store.Exists(id) {
			v := c.vouch(e, id, salvaged[id])
			switch {
			case v.present.Count() == 0:
				if err := c.store.Remove(id); err != nil {
					return err
				}
				dropped++
			default:
				kept++
				chunks += v.present.Count()
				if v.byDigest {
					byDigest++
				} else {
					bySums++
				}
				r.ChunkSize, r.Verdict = v.chunkSize, v.verdict
				b.putMap(id, v.present.Marshal())
				if b.sums == nil {
					b.sums = make(map[string][]byte)
				}
				b.sums[id] = v.sums
			}
		}
		b.records = append(b.records, r)
	}
	b.catalog = &catalogMeta{RefreshedAt: now, Source: c.up.URL("")}
	if err := idx.write(&b); err != nil {
		return fmt.Errorf("writing the rebuilt index: %w", err)
	}
	c.log.Warn("index rebuilt", "damage", damage, "moved_to", filepath.Join(c.cfg.Dir, aside),
		"images", len(entries), "data_files_kept", kept, "chunks_kept", chunks,
		"vouched_by_chunk_sums", bySums, "vouched_by_digest", byDigest, "data_files_dropped", dropped)
	return nil
}

// vouched is what a data file keeps in a rebuilt index.
type vouched struct {
	chunkSize int64
	present   chunkmap.Map
	sums      []byte
	verdict   verdict
	byDigest  bool
}

// vouch finds the chunks of an image's data file that can be vouched for
// (see above); none if nothing can.
func (c *Cache) vouch(e upstream.Entry, id string, s salvagedImage) vouched {
	f, err := c.store.OpenFile(id, os.O_RDONLY)
	if err != nil {
		return vouched{}
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != e.Size {
		return vouched{} // not this version's file
	}
	n := len(s.sums) / sha256.Size
	for _, cs := range chunkSizesFor(e.Size, n, s.chunkSize, c.cfg.ChunkSize) {
		present, ok := checkChunks(f, e.Size, cs, s.sums)
		if !ok {
			continue // chunk boundaries of another size
		}
		v := vouched{chunkSize: cs, present: present, sums: s.sums}
		if present.Complete() && e.Digest != "" {
			v.verdict = verified // sums are recorded when an image is verified
		}
		return v
	}
	if e.Digest == "" || !whole(f, e.Size) {
		return vouched{}
	}
	got, sums, err := hashFile(f, e.Size, c.cfg.ChunkSize)
	if err != nil || "sha256:"+got != e.Digest {
		return vouched{}
	}
	present := chunkmap.New(chunkmap.Chunks(e.Size, c.cfg.ChunkSize))
	for i := range present.Len() {
		present.Set(i)
	}
	return vouched{chunkSize: c.cfg.ChunkSize, present: present, sums: sums, verdict: verified, byDigest: true}
}

// chunkSizesFor lists the chunk sizes n sums of an image of size bytes
// may be of: the one its record gave if it was salvaged, else the mount's
// and the powers of two (the sizes people pick).
func chunkSizesFor(size int64, n int, recorded, mount int64) []int64 {
	if n == 0 {
		return nil
	}
	var cands []int64
	if recorded > 0 {
		cands = []int64{recorded}
	} else {
		cands = []int64{mount}
		for cs := int64(MinChunkSize); cs <= MaxChunkSize; cs *= 2 {
			if cs != mount {
				cands = append(cands, cs)
			}
		}
	}
	var fit []int64
	for _, cs := range cands {
		if chunkmap.Chunks(size, cs) == n {
			fit = append(fit, cs)
		}
	}
	return fit
}

// checkChunks hashes each chunk of f that holds data and compares it
// with its sum; ok is false if none matched though some were hashed (the
// sums are of another chunk size, or nothing is left to vouch for).
func checkChunks(f *os.File, size, chunkSize int64, sums []byte) (present chunkmap.Map, ok bool) {
	n := chunkmap.Chunks(size, chunkSize)
	present = chunkmap.New(n)
	buf := make([]byte, min(chunkSize, 1<<20))
	h := sha256.New()
	hashed := 0
	for i := range n {
		off := int64(i) * chunkSize
		l := min(chunkSize, size-off)
		if data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA); err != nil || data >= off+l {
			continue // a hole: never written
		}
		h.Reset()
		if _, err := io.CopyBuffer(h, io.NewSectionReader(f, off, l), buf); err != nil {
			continue
		}
		hashed++
		if bytes.Equal(h.Sum(nil), sums[i*sha256.Size:(i+1)*sha256.Size]) {
			present.Set(i)
		}
	}
	return present, present.Count() > 0 || hashed == 0
}

// whole says whether f has data all through (no hole).
func whole(f *os.File, size int64) bool {
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	return err == nil && hole >= size
}

// hashFile hashes f whole (hex) and each of its chunks (concatenated).
func hashFile(f *os.File, size, chunkSize int64) (string, []byte, error) {
	whole, chunk := sha256.New(), sha256.New()
	sums := make([]byte, 0, chunkmap.Chunks(size, chunkSize)*sha256.Size)
	buf := make([]byte, min(chunkSize, 1<<20))
	for off := int64(0); off < size; off += chunkSize {
		chunk.Reset()
		if _, err := io.CopyBuffer(io.MultiWriter(whole, chunk), io.NewSectionReader(f, off, min(chunkSize, size-off)), buf); err != nil {
			return "", nil, err
		}
		sums = chunk.Sum(sums)
	}
	return hex.EncodeToString(whole.Sum(nil)), sums, nil
}

// salvagedImage is what is kept of an image from a damaged index.
type salvagedImage struct {
	sums      []byte
	chunkSize int64 // from its record; 0 if that was not readable
}

// salvage reads what it can of the damaged index in dir: the latest
// version of each image's chunk sums and record, from the tables that
// pass their checksums and from its logs, replayed on a copy. What cannot
// be read is not there; the damaged index is not changed.
func salvage(dir string, log *slog.Logger) map[string]salvagedImage {
	s := salvager{latest: make(map[string]salvagedValue)}
	opt := badgerOptions(dir, log)
	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	for _, t := range tables {
		if err := s.table(t, opt); err != nil {
			log.Warn("salvaging the damaged index: a table is unreadable", "table", t, "err", oneLine(err))
		}
	}
	if err := s.logs(dir); err != nil {
		log.Warn("salvaging the damaged index: its logs are unreadable", "err", oneLine(err))
	}
	out := make(map[string]salvagedImage)
	for k, v := range s.latest {
		if v.value == nil {
			continue // deleted, or in the value log (unreadable without the tables)
		}
		if id, ok := strings.CutPrefix(k, sumPrefix); ok && len(v.value)%sha256.Size == 0 {
			si := out[id]
			si.sums = v.value
			out[id] = si
		}
		if id, ok := strings.CutPrefix(k, imgPrefix); ok {
			var r record
			if json.Unmarshal(v.value, &r) == nil && r.ChunkSize >= MinChunkSize && r.ChunkSize <= MaxChunkSize {
				si := out[id]
				si.chunkSize = r.ChunkSize
				out[id] = si
			}
		}
	}
	return out
}

// Flags of badger's value meta (badger's value.go), which its table
// iterators hand out as they are.
const (
	badgerBitDelete       = 1 << 0
	badgerBitValuePointer = 1 << 1
)

type salvager struct {
	latest map[string]salvagedValue // by key: sum/ and img/ keys only
}

type salvagedValue struct {
	version uint64
	value   []byte // nil: deleted, or unreadable
}

// keep keeps a version of a key if it is the latest seen.
func (s *salvager) keep(key []byte, version uint64, value []byte) {
	k := string(key)
	if !strings.HasPrefix(k, sumPrefix) && !strings.HasPrefix(k, imgPrefix) {
		return
	}
	if cur, ok := s.latest[k]; ok && cur.version >= version {
		return
	}
	s.latest[k] = salvagedValue{version: version, value: bytes.Clone(value)}
}

// table salvages one table, if it passes its checksums.
func (s *salvager) table(path string, opt badger.Options) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	t, err := openTable(path, opt)
	if err != nil {
		return err
	}
	defer t.Close(-1)
	it := t.NewIterator(0)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Key()
		vs := it.Value()
		value := vs.Value
		if vs.Meta&(badgerBitDelete|badgerBitValuePointer) != 0 {
			value = nil
		}
		s.keep(y.ParseKey(k), y.ParseTs(k), value)
	}
	return nil
}

// logs salvages the memtable and value logs: badger replays a copy of
// them (no tables, no manifest) in a temporary directory.
func (s *salvager) logs(dir string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	tmp, err := os.MkdirTemp("", "imgcache-salvage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	copied := 0
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && (strings.HasSuffix(n, ".mem") || strings.HasSuffix(n, ".vlog")) {
			if err := copyFile(filepath.Join(dir, n), filepath.Join(tmp, n)); err != nil {
				return err
			}
			copied++
		}
	}
	if copied == 0 {
		return nil
	}
	db, err := badger.Open(badgerOptions(tmp, slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var v []byte
			if !item.IsDeletedOrExpired() {
				if v, err = item.ValueCopy(nil); err != nil {
					v = nil
				}
			}
			s.keep(item.Key(), item.Version(), v)
		}
		return nil
	})
}
