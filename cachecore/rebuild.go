package cachecore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Rebuilding a damaged index (Config.RebuildIndex; mount --rebuild-index).
// Without it a damaged index stops the start (index/damage.go) and nothing
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
//   - The pin rules salvaged are kept (they vouch for no bytes), and pin
//     what they select at start; hits, the prefetch queue and past errors
//     start afresh.

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
	salvaged, pins := index.Salvage(dir, c.log)

	aside := "index.damaged-" + c.now().UTC().Format("20060102T150405Z")
	if err := c.dir.Rename("index", aside); err != nil {
		return fmt.Errorf("moving the damaged index aside to %s: %w", aside, err)
	}
	idx, err := index.Open(dir, c.log)
	if err != nil {
		return err
	}
	defer idx.Close()

	now := c.now()
	var b index.Batch
	var kept, bySums, byDigest, dropped, chunks int
	in := c.group(entries)
	for gi := range in {
		id, e := in[gi].id(), entries[in[gi].first]
		r := c.record(&in[gi], entries, id) // a Content image's bytes are stored again at the first refresh, if need be
		r.Added = now
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
				b.PutMap(id, v.present.Marshal())
				if b.Sums == nil {
					b.Sums = make(map[string][]byte)
				}
				b.Sums[id] = v.sums
			}
		}
		b.Records = append(b.Records, r)
	}
	b.Catalog = &index.CatalogMeta{RefreshedAt: now, Source: c.up.URL("")}
	b.Pins = pins // nil: none salvaged, and no pinned record to make rules of (pins.go)
	if err := idx.Write(&b); err != nil {
		return fmt.Errorf("writing the rebuilt index: %w", err)
	}
	c.log.Warn("index rebuilt", "damage", damage, "moved_to", filepath.Join(c.cfg.Dir, aside),
		"images", len(in), "data_files_kept", kept, "chunks_kept", chunks,
		"vouched_by_chunk_sums", bySums, "vouched_by_digest", byDigest, "data_files_dropped", dropped)
	return nil
}

// vouched is what a data file keeps in a rebuilt index.
type vouched struct {
	chunkSize int64
	present   chunkmap.Map
	sums      []byte
	verdict   index.Verdict
	byDigest  bool
}

// vouch finds the chunks of an image's data file that can be vouched for
// (see above); none if nothing can.
func (c *Cache) vouch(e upstream.Entry, id string, s index.Salvaged) vouched {
	f, err := c.store.OpenFile(id, os.O_RDONLY)
	if err != nil {
		return vouched{}
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != e.Size {
		return vouched{} // not this version's file
	}
	n := len(s.Sums) / sha256.Size
	for _, cs := range chunkSizesFor(e.Size, n, s.ChunkSize, c.cfg.ChunkSize) {
		present, ok := checkChunks(f, e.Size, cs, s.Sums)
		if !ok {
			continue // chunk boundaries of another size
		}
		v := vouched{chunkSize: cs, present: present, sums: s.Sums}
		if present.Complete() && e.Digest != "" {
			v.verdict = index.Verified // sums are recorded when an image is verified
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
	return vouched{chunkSize: c.cfg.ChunkSize, present: present, sums: sums, verdict: index.Verified, byDigest: true}
}

// chunkSizesFor lists the chunk sizes n sums of an image of size bytes
// may be of: the one its record gave if it was salvaged, else the mount's
// and the powers of two (the sizes people pick).
func chunkSizesFor(size int64, n int, recorded, mount int64) []int64 {
	if n == 0 {
		return nil
	}
	var cands []int64
	if MinChunkSize <= recorded && recorded <= MaxChunkSize { // a recorded size is salvaged as it was
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
