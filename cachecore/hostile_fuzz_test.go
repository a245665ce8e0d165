package cachecore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// FuzzEntryArithmetic: an entry that upstream.Entry.Validate accepts
// keeps every number the cache derives from it in range, at every chunk
// size: the chunk count (and its map's 32-bit length field), the last
// chunk's offset and length, the time as Unix nanoseconds and as the
// index's JSON.
func FuzzEntryArithmetic(f *testing.F) {
	f.Add(int64(math.MaxInt64), int64(0), int64(0), "")
	f.Add(int64(1<<62), int64(1700000000), int64(5), "sha256:"+fmt.Sprintf("%064x", 1))
	f.Add(int64(upstream.MaxSize), int64(-9223372036), int64(-854775808), "")
	f.Add(int64(upstream.MaxSize+1), int64(9223372036), int64(854775807), "")
	f.Add(int64(-1), int64(-62135596800), int64(0), "sha256:")
	f.Add(int64(0), int64(253402300799), int64(999999999), "")
	f.Fuzz(func(t *testing.T, size, sec, nsec int64, digest string) {
		e := upstream.Entry{Name: "a.img", Size: size, ModTime: time.Unix(sec, nsec), Digest: digest}
		if sec == 0 && nsec == 0 {
			e.ModTime = time.Time{}
		}
		if e.Validate() != nil {
			return
		}
		for cs := int64(MinChunkSize); cs <= MaxChunkSize; cs *= 2 {
			n := chunkmap.Chunks(size, cs)
			if n < 0 || int64(n) > math.MaxUint32 || int64(n)*cs < size || (n > 0 && int64(n-1)*cs >= size) {
				t.Fatalf("size %d, chunk size %d: %d chunks", size, cs, n)
			}
			m := chunkmap.New(n)
			if n > 0 && n <= 1<<16 { // a large map's round trip costs more than it finds
				m.Set(n - 1)
			}
			if back, err := chunkmap.Unmarshal(m.Marshal(), n); err != nil || back.Count() != m.Count() {
				t.Fatalf("size %d, chunk size %d: chunk map round trip: %v", size, cs, err)
			}
		}
		if !e.ModTime.IsZero() && !time.Unix(0, e.ModTime.UnixNano()).Equal(e.ModTime) {
			t.Fatalf("mtime %v does not survive UnixNano", e.ModTime)
		}
		r := index.Record{ID: fmt.Sprintf("%064x", 1), Name: e.Name, Size: size, ModTime: e.ModTime, Digest: digest, ChunkSize: MinChunkSize}
		v, err := json.Marshal(r)
		if err != nil {
			t.Fatalf("record of an accepted entry cannot be stored: %v", err)
		}
		var back index.Record
		if err := json.Unmarshal(v, &back); err != nil || checkRecord(&back) != nil || !back.ModTime.Equal(r.ModTime) {
			t.Fatalf("record round trip: %v, check %v", err, checkRecord(&back))
		}
	})
}

// FuzzCatalogToIndex runs a catalog of extreme entries through a real
// cache: the listing (sizes, times, how many), reads at the start and end
// of each image, a restart that decodes the records from the index, and
// a record written straight into the index as an older daemon would have
// kept it. Nothing may panic; an entry is served if and only if Validate
// accepts it; a read gives the upstream's bytes or an error.
func FuzzCatalogToIndex(f *testing.F) {
	f.Add(int64(math.MaxInt64), int64(1700000000), int64(0), uint8(3), uint8(0))
	f.Add(int64(1<<62), int64(0), int64(0), uint8(1), uint8(1))
	f.Add(int64(upstream.MaxSize), int64(1700000000), int64(1), uint8(200), uint8(2))
	f.Add(int64(upstream.MaxSize-1), int64(-62135596800), int64(0), uint8(2), uint8(1))
	f.Add(int64(70_000), int64(253402300799), int64(999999999), uint8(5), uint8(0))
	f.Add(int64(0), int64(1), int64(-1), uint8(1), uint8(2))
	f.Fuzz(func(t *testing.T, size, sec, nsec int64, count, chunkShift uint8) {
		mtime := time.Unix(sec, nsec)
		chunk := int64(MinChunkSize) << (chunkShift % 3) // up to 256 KiB: a read fetches one chunk
		var entries []upstream.Entry
		for i := range int(count)%64 + 1 {
			entries = append(entries, upstream.Entry{Name: fmt.Sprintf("d/%d.img", i), Size: size, ModTime: mtime})
		}
		up := listing(entries...)
		valid := entries[0].Validate() == nil
		dir := t.TempDir()
		check := func(c *Cache) {
			t.Helper()
			for _, e := range entries {
				ent, ok := c.Lookup(e.Name)
				if ok != valid {
					t.Fatalf("%s (size %d, mtime %v) listed %v, valid %v", e.Name, size, mtime, ok, valid)
				}
				if !ok {
					continue
				}
				img := ent.Image
				if img.Size() != size || img.Info().CachedBytes > size {
					t.Fatalf("%s: %+v", e.Name, img.Info())
				}
			}
			if !valid || size == 0 {
				return
			}
			img := mustLookup(t, c, entries[0].Name)
			h, err := c.Open(img)
			if errors.Is(err, syscall.EFBIG) {
				return // ext4 holds no file over 16 TiB less 4 KiB
			}
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			for _, off := range []int64{0, size / 2, size - 1, size, math.MaxInt64} {
				b := make([]byte, 2)
				n, err := h.ReadAt(b, off)
				for i := range n {
					if b[i] != byte(off+int64(i)) {
						t.Fatalf("byte %d of a %d-byte image is %d", off+int64(i), size, b[i])
					}
				}
				if off >= size && n != 0 {
					t.Fatalf("read at %d of a %d-byte image gave %d bytes", off, size, n)
				}
				_ = err // a file system may refuse a file this large (EFBIG)
			}
		}
		c := openTest(t, dir, up, func(cfg *Config) { cfg.ChunkSize = chunk; cfg.Logger = discardLogger() })
		check(c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}

		// An older daemon kept what it was listed, unchecked.
		idx, err := index.Open(filepath.Join(dir, "index"), discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		kept := index.Record{ID: fmt.Sprintf("%064x", uint64(size)), Name: "kept.img", Size: size, ModTime: mtime,
			ChunkSize: chunk, Listed: true, Hits: math.MaxUint64}
		var b index.Batch
		b.Records = []index.Record{kept}
		b.PutMap(kept.ID, []byte{0xff, 0xff, 0xff, 0xff})
		werr := idx.Write(&b) // a time JSON cannot hold is not stored
		if err := idx.Close(); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, upstream.Entry{Name: "kept.img", Size: size, ModTime: mtime})
		up.AddEntry(entries[len(entries)-1])
		c = openTest(t, dir, up, func(cfg *Config) { cfg.ChunkSize = chunk; cfg.Logger = discardLogger() })
		defer c.Close()
		check(c)
		if _, ok := c.Lookup("kept.img"); ok && (!valid || werr != nil) {
			t.Fatalf("kept.img (size %d, mtime %v) served from the index", size, mtime)
		}
	})
}
