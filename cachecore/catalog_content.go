package cachecore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/store"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Content images: files the upstream built or fetched while listing
// (upstream.Entry.Content: an OCI layout's index.json and manifests, a
// simplestreams product file). Their bytes come with the catalog, so they
// are stored as it is taken in: each new one as a whole data file
// (store.Put: work file, fsync, rename), on the books like any data,
// recorded complete and verified, before the tree that lists them is
// published. If one cannot be stored (no room, ENOSPC, EIO) the refresh
// is refused: a catalog whose files are not all there is never shown.
// They are never evicted (after an offline restart they are the only
// copy) and never fetched; their bytes are not kept in memory after
// intake. A new version (new bytes) is a new image, as for any image.

// stored is the data file of a new Content image, written at intake.
type stored struct {
	alloc int64     // its allocated bytes, on the books since it was written
	sums  []byte    // its chunk sums
	stamp fileStamp // the file as written
}

// storeContent stores the Content of the listing's images that do not
// hold it yet: new images (written here, not yet listed) and images of
// the catalog whose bytes are not all there (repaired in place if nobody
// uses them). It returns the files of new images, by intake; on an error
// none of those is left, and the refresh must be refused. It first waits
// for deletions in progress of the listing's IDs (deleteImage), which
// would remove what it writes.
func (c *Cache) storeContent(entries []upstream.Entry, in []intake) (map[int32]*stored, error) {
	type todo struct {
		g   int32
		img *Image // the image of that ID now, nil for a new one
	}
	var work []todo
	for {
		c.mu.Lock()
		wait := c.deletionOfLocked(in)
		if wait == nil {
			for gi := range in {
				if in[gi].content < 0 {
					continue
				}
				img := c.imageOfKeyLocked(&in[gi].key)
				if img == nil {
					img = c.lingering[in[gi].id()] // revived by publish
				}
				work = append(work, todo{int32(gi), img})
			}
		}
		c.mu.Unlock()
		if wait == nil {
			break
		}
		<-wait
	}
	// Files are written side by side: each sync waits for a journal
	// commit, which concurrent ones share (10,000 manifests of 1.5 KB one
	// by one took 66 s here).
	puts := make(map[int32]*stored)
	var mu sync.Mutex // protects puts
	var g errgroup.Group
	g.SetLimit(contentWriters)
	for _, w := range work {
		g.Go(func() error {
			it, e := &in[w.g], &entries[in[w.g].content]
			if w.img != nil {
				if err := c.repairContent(w.img, e.Content); err != nil {
					return &Error{Op: "store catalog file", Name: e.Name, Err: err}
				}
				return nil
			}
			s, err := c.putContent(it.id(), e.Content, c.cfg.ChunkSize)
			if err != nil {
				return &Error{Op: "store catalog file", Name: e.Name, Err: err}
			}
			mu.Lock()
			puts[w.g] = s
			mu.Unlock()
			return nil
		})
	}
	err := g.Wait()
	if err == nil && len(puts) > 0 {
		ids := make([]string, 0, len(puts))
		for gi := range puts {
			ids = append(ids, in[gi].id())
		}
		if err = c.store.SyncDirs(ids); err != nil {
			err = &Error{Op: "store catalog files", Err: err}
		}
	}
	if err != nil {
		c.dropStored(in, puts)
		return nil, err
	}
	return puts, nil
}

// contentWriters is how many catalog files are written at once.
const contentWriters = 16

// putContent writes data as the data file of the new image id, within
// room reserved for it.
func (c *Cache) putContent(id string, data []byte, chunkSize int64) (*stored, error) {
	n := (int64(len(data))+blockSize-1)/blockSize*blockSize + writeSlack
	if err := c.reserve(n); err != nil {
		return nil, err
	}
	defer c.unreserve(n)
	f, err := c.store.Put(id, data)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	var stamp fileStamp
	if err == nil {
		stamp, err = stampOf(f)
	}
	if err != nil {
		c.store.Remove(id)
		return nil, err
	}
	s := &stored{alloc: store.Allocated(fi), sums: chunkSums(data, chunkSize), stamp: stamp}
	c.life.space.Measured(s.alloc) // before the reservation goes: the books never dip
	return s, nil
}

// repairContent stores data as the bytes of img, an image of the catalog
// that should hold them whole (a Content image whose data file was lost
// or damaged, or an image that becomes one). An image in use is left as
// it is: its reads fetch what is missing.
func (c *Cache) repairContent(img *Image, data []byte) error {
	img.mu.Lock()
	trusted, cs := img.trustedLocked(), img.chunkSize
	img.mu.Unlock()
	if trusted {
		return nil
	}
	// The sums first, as verification records them: a verified image
	// always has its sums (any copy of these bytes has these).
	sums := chunkSums(data, cs)
	if err := c.idx.Write(&index.Batch{Sums: map[string][]byte{img.id: sums}}); err != nil && !errors.Is(err, ErrIndexHeld) {
		return err
	}
	n := (int64(len(data))+blockSize-1)/blockSize*blockSize + writeSlack
	if err := c.reserve(n); err != nil {
		return err
	}
	defer c.unreserve(n)
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.users > 0 || img.retired || img.trustedLocked() {
		return nil
	}
	f, err := c.store.Put(img.id, data)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	var stamp fileStamp
	if err == nil {
		stamp, err = stampOf(f)
	}
	if err == nil {
		err = c.store.SyncDirs([]string{img.id})
	}
	if err != nil {
		return err
	}
	for i := range img.present.Len() {
		img.present.Set(i)
	}
	img.rec.Verdict, img.rec.Content = index.Verified, true
	img.life.gen++ // a flush snapshot of the old chunk map is stale
	img.dirty, img.unsynced = true, false
	img.forgetSumsLocked()
	img.rest.checked, img.rest.stamp = true, stamp
	c.setAllocLocked(img, store.Allocated(fi))
	c.life.space.Keep(img.id)
	c.log.Info("catalog file stored again", "image", img.entry.Name)
	return nil
}

// dropStored removes the files putContent wrote for a refresh that is
// refused.
func (c *Cache) dropStored(in []intake, puts map[int32]*stored) {
	for g, s := range puts {
		if err := c.store.Remove(in[g].id()); err != nil {
			c.log.Warn("removing a catalog file of a refused refresh", "id", in[g].id(), "err", err)
			continue
		}
		c.life.space.Measured(-s.alloc)
	}
}

// chunkSums is the sha256 of each chunkSize bytes of data, concatenated,
// as verification records them.
func chunkSums(data []byte, chunkSize int64) []byte {
	size := int64(len(data))
	sums := make([]byte, 0, chunkmap.Chunks(size, chunkSize)*sha256.Size)
	for off := int64(0); off < size; off += chunkSize {
		s := sha256.Sum256(data[off:min(off+chunkSize, size)])
		sums = append(sums, s[:]...)
	}
	return sums
}

// readContent reads the bytes of a Content image from its data file, nil
// if they are not all there or do not match its digest.
func (c *Cache) readContent(img *Image) []byte {
	img.mu.Lock()
	ok := img.rec.Content && img.trustedLocked()
	img.mu.Unlock()
	if !ok {
		return nil
	}
	f, err := c.store.OpenFile(img.id, os.O_RDONLY)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, img.entry.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		c.log.Warn("reading a catalog file", "image", img.entry.Name, "err", err)
		return nil
	}
	if sum := sha256.Sum256(b); img.entry.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
		c.log.Warn("a catalog file does not match its digest; the upstream is not told of it", "image", img.entry.Name)
		return nil
	}
	return b
}

// remembered returns the hot images' entries as the upstream listed them,
// for upstream.Rememberer (known.go): one per name, with their ETags,
// attributes and (read from the data files) Content, so that the first
// listing after a start can ask only whether they changed. Retired
// images are left out: the upstream no longer lists them.
func (c *Cache) remembered() []upstream.Entry {
	type one struct {
		img     *Image
		e       upstream.Entry
		names   []string
		content bool
	}
	var all []one
	for _, img := range c.imageList() {
		img.mu.Lock()
		e, x := img.entry, img.rec.Extras()
		e.Name, e.ETag, e.Attrs = img.rec.Name, img.rec.ETag, x.Attrs.Map()
		o := one{img, e, img.names(), img.rec.Content}
		img.mu.Unlock()
		if x.RetiredAt.IsZero() {
			all = append(all, o)
		}
	}
	// Read side by side: a catalog of 10,000 manifests is 10,000 files.
	var g errgroup.Group
	g.SetLimit(contentWriters)
	for i := range all {
		if all[i].content {
			g.Go(func() error {
				all[i].e.Content = c.readContent(all[i].img)
				return nil
			})
		}
	}
	g.Wait()
	var es []upstream.Entry
	for _, o := range all {
		for _, name := range o.names {
			o.e.Name = name
			es = append(es, o.e)
		}
	}
	return es
}
