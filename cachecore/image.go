package cachecore

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// State is an image's cache state as users see it.
type State string

const (
	StateAbsent   State = "absent"   // nothing cached
	StatePartial  State = "partial"  // some chunks cached, or all but not yet verified
	StateComplete State = "complete" // every chunk cached, no digest checked
	StateVerified State = "verified" // complete and its bytes hash to its digest
	StateInvalid  State = "invalid"  // its bytes did not hash to its digest
)

// Image is one version of one image of the catalog. The fs keeps a
// pointer to it in the file node, so a file that is open keeps reading the
// version it opened even after the catalog moves on.
type Image struct {
	// read only after newImage
	c         *Cache
	id        string
	entry     upstream.Entry
	chunkSize int64
	nChunks   int
	ino       uint64

	mu        sync.Mutex   // protects the following
	rec       index.Record // mutable fields: Hits, LastAccess, LastError*, Verdict, Listed...; Name, Links and RetiredAt change with Cache.mu held too
	present   chunkmap.Map
	flights   map[int]*flight // chunk -> the fetch that will bring it
	stream    *stream         // the stream reading a whole reply, if any (stream.go)
	probing   chan struct{}   // closed when the request asking first has its reply (stream.go)
	file      *os.File        // open while users > 0
	users     int             // open handles and running fetches
	dirty     bool            // rec or present changed since the last flush
	unsynced  bool            // data written since the last fsync
	retired   bool            // no longer in the catalog: delete when unused
	hashState verifyState     // the hash growing as chunks land (hashing.go)
	writes    ownWrites       // this process's writes to the data file, told from others' (hashing.go)
	sums      []byte          // chunk sums of a verified copy, for refetches (sums.go)
	sumsRead  bool            // sums holds what the index has
	rest      restState       // checks at rest since the mount (rest.go)
	life      imageLife       // usage, eviction generation (lifecycle.go)

	links atomic.Uint32 // names in the current tree (nlink)

	// fetchAs, once set, is the entry fetches ask for: the name and
	// validators the catalog last listed the image under (update). An
	// image known by its digest stays the same image when the upstream
	// renames it or publishes its bytes again with a new ETag or date,
	// and a fetch asking with the old ones would fail as "changed" (or
	// not found) for ever.
	fetchAs atomic.Pointer[upstream.Entry]

	// protected by Cache.mu (catalog.go)
	placed uint32 // names placed by the tree being built
	seen   uint32 // the catalog generation that last listed it
}

// flight is one chunk on its way from the upstream. done is closed when
// the chunk is present or err is set.
type flight struct {
	done  chan struct{}
	err   error
	req   *request // the run bringing it (request.go); under img.mu
	taken bool     // its bytes are being written (by req's run); under img.mu
}

func newImage(c *Cache, r index.Record, present chunkmap.Map) *Image {
	settleEmpty(&r) // verify.go
	n := int((r.Size + r.ChunkSize - 1) / r.ChunkSize)
	if present.Len() != n {
		present = chunkmap.New(n)
	}
	return &Image{
		c:  c,
		id: r.ID,
		entry: upstream.Entry{Name: r.Name, Size: r.Size, ModTime: r.ModTime,
			ETag: r.ETag, Digest: r.Digest, ByDigest: r.ByDigest},
		chunkSize: r.ChunkSize,
		nChunks:   n,
		ino:       inoOf(r.ID),
		rec:       r,
		present:   present,
		flights:   make(map[int]*flight),
	}
}

// fetchEntry is the entry a fetch of the image asks the upstream for.
func (img *Image) fetchEntry() upstream.Entry {
	if e := img.fetchAs.Load(); e != nil {
		return *e
	}
	return img.entry
}

// Ino is a stable inode number for this image version.
func (img *Image) Ino() uint64 { return img.ino }

// Size is the image's size in bytes.
func (img *Image) Size() int64 { return img.entry.Size }

// ModTime is the upstream's modification time (zero when unknown).
// An image republished upstream (the same digest) shows the new one.
func (img *Image) ModTime() time.Time { return img.fetchEntry().ModTime }

// Added is when the cache first listed the image (its record was made):
// a stable stand-in for a modification time the upstream does not give
// (a registry's blobs and manifests). It never changes.
func (img *Image) Added() time.Time { return img.rec.Added }

// Name is the image's path in the catalog (its first name, if it has
// several), as it was when the image was made.
func (img *Image) Name() string { return img.entry.Name }

// Links is how many names the image has in the catalog (ByDigest images
// may have several, like hard links); 1 before it is placed.
func (img *Image) Links() uint32 { return max(img.links.Load(), 1) }

// Info is a snapshot of an image's metadata and cache state.
type Info struct {
	Name        string
	Size        int64
	ModTime     time.Time
	Digest      string // "sha256:<hex>" or empty
	Source      string // upstream URL, credentials removed
	State       State
	CachedBytes int64
	Hits        uint64
	LastAccess  time.Time // zero if never opened
	LastError   string    // empty if none
	LastErrorAt time.Time
	Pinned      bool // never evicted; fetched completely in the background
	Queued      bool // in the prefetch queue
	// Attrs are the upstream's facts about the image (upstream.Entry.Attrs),
	// nil if none.
	Attrs map[string]string
	// Retired is when the image left the upstream's catalog; zero while
	// it is listed (an upstream.Retainer's images stay while cached).
	Retired time.Time
	// Links is how many names the image has in the catalog.
	Links uint32
}

func (img *Image) Info() Info {
	img.mu.Lock()
	defer img.mu.Unlock()
	return Info{
		Name:        img.rec.Name,
		Size:        img.entry.Size,
		ModTime:     img.ModTime(),
		Digest:      img.entry.Digest,
		Source:      img.c.up.URL(img.entry.Name),
		State:       img.stateLocked(),
		CachedBytes: img.cachedBytesLocked(),
		Hits:        img.rec.Hits,
		LastAccess:  img.rec.LastAccess,
		LastError:   img.rec.LastError,
		LastErrorAt: img.rec.LastErrorAt,
		Pinned:      img.rec.Pinned,
		Queued:      !img.rec.QueuedAt.IsZero(),
		Attrs:       img.rec.Extras().Attrs.Map(),
		Retired:     img.rec.Extras().RetiredAt,
		Links:       img.Links(),
	}
}

// CachedBytes is how many bytes of the image are in the cache.
func (img *Image) CachedBytes() int64 {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.cachedBytesLocked()
}

// Complete reports whether every byte is cached and, if the image has a
// digest, verified (in strict mode: and checked since the mount, rest.go):
// bytes that may stay in the kernel's page cache.
func (img *Image) Complete() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.settledLocked()
}

// KeepPages reports whether the kernel may keep the image's pages across
// opens: a settled image's, and in lazy mode an image every chunk of
// which is cached while its verdict is still to come. Lazy mode serves
// bytes as they arrive, so what the kernel holds from the reads so far is
// what the daemon would serve again, and the first re-read after a cold
// read need not wait for the hash; a failed verification drops the pages
// of open images (Notifier.PagesDropped), and an open after it finds the
// image incomplete.
func (img *Image) KeepPages() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.settledLocked() {
		return true
	}
	return img.c.cfg.Verify == VerifyLazy && img.present.Complete() && img.rec.Verdict != index.Invalid
}

func (img *Image) stateLocked() State {
	switch {
	case img.rec.Verdict == index.Invalid:
		return StateInvalid
	case img.present.Complete() && img.rec.Verdict == index.Verified:
		return StateVerified
	case img.present.Complete() && img.entry.Digest == "":
		return StateComplete // nothing to verify against
	case img.present.Complete():
		return StatePartial // until verified
	case img.present.Count() == 0:
		return StateAbsent
	default:
		return StatePartial
	}
}

func (img *Image) cachedBytesLocked() int64 {
	b := int64(img.present.Count()) * img.chunkSize
	if last := img.nChunks - 1; last >= 0 && img.present.Has(last) {
		b -= img.chunkSize - img.chunkLen(last)
	}
	return b
}

// chunkLen is the length of chunk i (the last one may be short).
func (img *Image) chunkLen(i int) int64 {
	return min(img.chunkSize, img.entry.Size-int64(i)*img.chunkSize)
}

// acquireLocked opens the data file for one more user.
func (img *Image) acquireLocked() error {
	if img.file == nil {
		f, err := img.c.store.Open(img.id, img.entry.Size)
		if err != nil {
			lost := img.c.noticeLoss()
			if lost == nil {
				return &Error{Op: "open cache file", Name: img.entry.Name, Err: err}
			}
			img.fileGoneLocked(lost) // no file: reads go around the cache (storage.go)
		}
		img.file = f
	}
	img.users++
	return nil
}

// release drops one user; the last one syncs the data file if it was
// written, measures it, closes it and, if the image has left the catalog
// meanwhile, deletes it.
func (img *Image) release() {
	img.mu.Lock()
	synced := img.users == 1 && img.syncForMeasure() // usage.go
	img.users--
	if img.users > 0 {
		img.mu.Unlock()
		return
	}
	img.c.releasedLocked(img, synced) // measure it; it may be evicted now
	if !img.hashState.running && !img.present.Complete() {
		img.hashState.clear() // frees the hash of a partial image nobody reads (hashing.go)
		img.writes.unwatch()
	}
	f, retired := img.file, img.retired
	img.file = nil
	img.mu.Unlock()
	if f != nil {
		f.Close()
	}
	if retired {
		img.c.deleteImage(img)
	}
}

func (img *Image) recordErrorLocked(err error) {
	img.rec.LastError = err.Error()
	img.rec.LastErrorAt = time.Now()
	img.dirty = true
}

// InUse reports whether the image is open or being fetched: only then can
// its cached bytes grow (a read fetching) — so the fs may let the kernel
// keep the attributes of an idle image for longer.
func (img *Image) InUse() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.users > 0
}
