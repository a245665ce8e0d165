package cachecore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/store"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Defaults for Config fields left zero.
const (
	DefaultChunkSize     = 1 << 20
	DefaultReadAhead     = 64 << 20
	DefaultMaxFetches    = 8
	DefaultCatalogTTL    = 10 * time.Minute
	DefaultFlushInterval = 2 * time.Second
	// MinChunkSize and MaxChunkSize bound Config.ChunkSize, which must be
	// a multiple of 4 KiB (the page size, so chunks never share a page).
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
)

// Config configures a Cache.
type Config struct {
	Dir      string            // the cache directory; created 0700 if missing; must be safe (store/dir.go)
	Upstream upstream.Upstream // where images come from

	ChunkSize     int64         // fetch unit for new images; 0: DefaultChunkSize
	ReadAhead     int64         // most bytes fetched ahead of a sequential reader; 0: default, <0: none
	MaxFetches    int           // range requests in flight at once; 0: DefaultMaxFetches
	CatalogTTL    time.Duration // how often the catalog is refreshed; 0: DefaultCatalogTTL
	FlushInterval time.Duration // how often index changes are written; 0: default

	// Verify says when an image's bytes may be served: VerifyLazy (the
	// default) serves chunks as they arrive, VerifyStrict none before the
	// whole image is fetched and verified (verify.go).
	Verify VerifyMode
	// ScrubInterval is how often every cached image is checked at rest
	// (scrub.go); 0: never. ScrubRate caps its reads in bytes a second;
	// 0: DefaultScrubRate.
	ScrubInterval time.Duration
	ScrubRate     int64

	FailureConfig // retries, read timeout (retry.go)

	// InitialListTimeout bounds the first listing of an upstream when the
	// index has no catalog yet (or is rebuilt); 0: 30s.
	InitialListTimeout time.Duration

	// RebuildIndex, if the index is damaged (ErrIndexDamaged), moves it
	// aside and rebuilds it from the data files and the upstream's
	// catalog (rebuild.go). An index that is sound is left alone.
	RebuildIndex bool

	Logger *slog.Logger // nil: discard

	// Notifier is told what changed (notify.go); nil: nobody.
	Notifier Notifier

	Lifecycle // size limit, pruner, cleaner, prefetcher (lifecycle.go)

	// Products, for an upstream of products with versions and aliases
	// (simplestreams), lets pins by glob keep only the newest version of
	// each product and pins by alias be made (pins.go); nil: none.
	Products Products

	now          func() time.Time // tests
	abandonAfter time.Duration    // tests; 0: defaultAbandonAfter (request.go)
}

// Cache is a read-through image cache over one upstream.
type Cache struct {
	// read only after Open
	cfg       Config
	up        upstream.Upstream
	log       *slog.Logger
	idx       *index.Index
	store     *store.Store     // the data files
	free      *store.FreeSpace // keeps room on the filesystem for the index
	dir       *store.Dir       // the cache directory, checked (store/dir.go)
	lock      *os.File
	ctx       context.Context // the cache's own: fetches run on it, Close ends it
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	slots     *fetchSlots   // one per range request in flight (slots.go)
	kick      chan struct{} // asks the flusher to flush now
	relist    chan struct{} // asks the catalog loop to refresh now
	verifying chan struct{} // one token per image being hashed
	sums      sumsPasses    // the chunk sums of verified images being made (sums_after.go)
	stats     Stats
	tree      atomic.Pointer[tree]
	noRanges  atomic.Bool                 // the upstream's replies say it ignores Range (stream.go)
	probed    atomic.Bool                 // a reply has said whether it does
	lost      atomic.Pointer[storageLoss] // set once the storage is gone (storage.go)
	life      lifecycle
	pins      pinState // the pin rules (pins.go)

	mu        sync.Mutex               // protects the following
	images    map[string]*Image        // every hot image of the catalog, by ID
	cold      *coldSet                 // the cold images of the catalog (cold.go)
	lingering map[string]*Image        // images that left the catalog and are not yet deleted, by ID
	deleting  map[string]chan struct{} // lingering images being deleted: closed when done
	gen       uint32                   // counts the listings published (Image.seen)
	catalog   index.CatalogMeta
	listErr   error // the last refresh's error, nil after a success
	listErrAt time.Time
	warnings  []string // what the upstream left out of its last listing (upstream.Warner)
}

// Open opens (creating if needed) the cache in cfg.Dir and starts its
// background work. The catalog saved in the index is served at once; if
// there is none the upstream is listed first (within
// cfg.InitialListTimeout; if that fails the cache starts empty and keeps
// trying in the background).
func Open(cfg Config) (*Cache, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	// Whatever creates files in the cache directory (badger makes its
	// files 0666 less the umask) makes them for this user alone: a file
	// there that others may write is refused at the next start.
	syscall.Umask(0o077)
	reservePs() // for the hashing threads (lowprio.go)
	dir, err := store.OpenDir(cfg.Dir, true)
	if err != nil {
		return nil, err
	}
	if err := cfg.Lifecycle.fill(cfg.Dir); err != nil {
		dir.Close()
		return nil, err
	}
	lock, err := dir.Lock()
	if err != nil {
		dir.Close()
		return nil, err
	}
	c := &Cache{
		cfg:       cfg,
		up:        cfg.Upstream,
		log:       cfg.Logger,
		dir:       dir,
		lock:      lock,
		free:      store.NewFreeSpace(cfg.Dir, cfg.SpaceReserve),
		slots:     newFetchSlots(cfg.MaxFetches),
		kick:      make(chan struct{}, 1),
		relist:    make(chan struct{}, 1),
		verifying: make(chan struct{}, 1),
		images:    make(map[string]*Image),
		cold:      newColdSet(nil, true),
		lingering: make(map[string]*Image),
		deleting:  make(map[string]chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.sums.init()
	if err := c.openStorage(); err != nil {
		c.closeStorage()
		return nil, err
	}
	if err := c.initLifecycle(); err != nil {
		c.closeStorage()
		return nil, err
	}
	if r, ok := c.up.(upstream.Rememberer); ok {
		r.Remember(known{c})
	}
	fresh := c.catalog.RefreshedAt.IsZero()
	if fresh {
		// A first listing may be a million images, all written to the
		// index at once, and the mount governs the collector only once
		// mounted (mount/memory.go): at Go's default its garbage took a
		// first mount of a million images to 1.8-2.1 GB; now 1.0. (The
		// mount does not govern from its own start: a remount's start-up,
		// which makes a lot of short-lived garbage, then ran about half a
		// second longer.)
		gc := debug.SetGCPercent(firstListingGC)
		ctx, cancel := context.WithTimeout(c.ctx, cfg.InitialListTimeout)
		if err := c.refresh(ctx); err != nil {
			c.log.Warn("upstream could not be listed; starting with an empty catalog and retrying",
				"upstream", c.up.URL(""), "err", err)
		}
		cancel()
		debug.SetGCPercent(gc)
		c.releaseMemory(c.ImageCount())
	}
	c.wg.Add(2)
	go c.flushLoop()
	go c.catalogLoop(!fresh)
	c.resumeVerification()
	if cfg.ScrubInterval > 0 {
		c.wg.Add(1)
		go c.scrubLoop()
	}
	c.startLifecycle()
	return c, nil
}

func (cfg *Config) fill() error {
	if cfg.Dir == "" || cfg.Upstream == nil {
		return errors.New("cachecore: Config needs Dir and Upstream")
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize < MinChunkSize || cfg.ChunkSize > MaxChunkSize || cfg.ChunkSize%4096 != 0 {
		return fmt.Errorf("chunk size %d: must be a multiple of 4 KiB between %d KiB and %d MiB",
			cfg.ChunkSize, MinChunkSize>>10, MaxChunkSize>>20)
	}
	if cfg.ReadAhead == 0 {
		cfg.ReadAhead = DefaultReadAhead
	}
	if cfg.MaxFetches <= 0 {
		cfg.MaxFetches = DefaultMaxFetches
	}
	if cfg.CatalogTTL <= 0 {
		cfg.CatalogTTL = DefaultCatalogTTL
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	cfg.FailureConfig.fill()
	if cfg.InitialListTimeout <= 0 {
		cfg.InitialListTimeout = 30 * time.Second
	}
	if cfg.Notifier == nil {
		cfg.Notifier = noNotifier{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.abandonAfter <= 0 {
		cfg.abandonAfter = defaultAbandonAfter
	}
	return nil
}

func (c *Cache) now() time.Time { return c.cfg.now() }

// Close stops background work, waits for fetches in flight to end, writes
// what is not yet in the index and releases the cache directory.
func (c *Cache) Close() error {
	c.sums.finish(sumsGrace) // sums_after.go
	c.cancel()
	c.wg.Wait()
	err := c.flush()
	if cerr := c.closeStorage(); err == nil {
		err = cerr
	}
	return err
}

func (c *Cache) closeStorage() error {
	var err error
	if c.idx != nil {
		err = c.idx.Close()
	}
	if c.store != nil {
		c.store.Close()
	}
	if c.lock != nil {
		c.lock.Close() // closing drops the flock
	}
	c.dir.Close()
	return err
}

// RefreshCatalog asks for the catalog to be refreshed now rather than at
// the next CatalogTTL (a reload); it returns at once.
func (c *Cache) RefreshCatalog() { c.refreshSoon() }

// firstListingGC is the collector's GOGC while a new cache lists its
// upstream for the first time (Open): an eighth of the live heap, as
// the mount keeps it afterwards.
const firstListingGC = 12

// Source is the upstream's URL, credentials removed.
func (c *Cache) Source() string { return c.up.URL("") }

// imageKey names one version of one image: its ID, in binary (the hex
// form is the record's ID and the data file's name). An image with a
// digest is identified by it (the same bytes under the same name from
// any mirror); otherwise the upstream's URL is part of the identity,
// since size and mtime prove nothing across servers. An entry named by
// its digest (ByDigest) is identified by the digest alone: one image
// under all its names (catalog_intake.go).
type imageKey [32]byte

// hex is the ID as records and data files name it.
func (k *imageKey) hex() string { return hex.EncodeToString(k[:]) }

// hexBytes is the ID's hex form in an array: a map of IDs indexed by
// string(h[:]) makes no string (the compiler's map-lookup conversion),
// where a refresh of a million images made a million.
func (k *imageKey) hexBytes() (h [2 * len(imageKey{})]byte) {
	hex.Encode(h[:], k[:])
	return h
}

// keyer makes the keys of a listing's entries; source is the upstream's
// URL. Its buffer is reused: a listing of a million entries makes no
// string or object per entry.
type keyer struct {
	source string
	buf    []byte
}

func (k *keyer) key(e *upstream.Entry) imageKey {
	b := k.buf[:0]
	if e.ByDigest {
		b = append(append(b, "by digest\x00"...), e.Digest...)
	} else {
		if e.Digest == "" {
			b = append(b, k.source...)
		}
		b = append(append(append(b, 0), e.Name...), 0)
		b = e.AppendVersion(b)
	}
	k.buf = b
	return sha256.Sum256(b)
}

// inoOf derives a stable inode number from a hex hash; 0 and 1 are taken
// (none, and the root).
func inoOf(hexID string) uint64 {
	b, _ := hex.DecodeString(hexID[:16])
	ino := binary.BigEndian.Uint64(b)
	if ino < 2 {
		ino += 2
	}
	return ino
}

// deleteImage drops an image that left the catalog and is unused: its
// data file and record. Until it is done the image lingers (c.lingering),
// so that a refresh that lists its ID again waits for it rather than make
// a record and a file that it would then remove (publish); before it
// begins, such a refresh takes the image back (reviveLocked), and then
// nothing is deleted.
func (c *Cache) deleteImage(img *Image) {
	c.mu.Lock()
	img.mu.Lock()
	ok := c.lingering[img.id] == img && img.retired && img.users == 0 && c.deleting[img.id] == nil
	if ok {
		c.deleting[img.id] = make(chan struct{})
		// A node the kernel still holds may open it again: it must
		// fetch afresh, not read a file made anew as present.
		img.present.Clear()
	}
	img.mu.Unlock()
	c.mu.Unlock()
	if !ok {
		return
	}
	if err := c.store.Remove(img.id); err != nil {
		c.log.Warn("removing cache file", "image", img.entry.Name, "err", err)
	} else {
		c.forgetUsage(img)
	}
	c.life.indexMu.Lock() // after any flush of a snapshot taken before it was retired (flush.go)
	err := c.idx.Write(&index.Batch{Deletes: []string{img.id}})
	c.life.indexMu.Unlock()
	if err != nil {
		c.log.Warn("removing index record", "image", img.entry.Name, "err", err)
	}
	c.mu.Lock()
	delete(c.lingering, img.id)
	close(c.deleting[img.id])
	delete(c.deleting, img.id)
	c.mu.Unlock()
}

// checkRecord says whether a record can become an image: what a catalog entry
// must pass (upstream.Entry.Validate) and a chunk size the cache can use.
// An index written before entries were validated, or damaged, may hold
// a record that is not; start-up drops it (and its data) instead of
// building an image from it.
func checkRecord(r *index.Record) error {
	e := upstream.Entry{Name: r.Name, Size: r.Size, ModTime: r.ModTime, ETag: r.ETag, Digest: r.Digest,
		ByDigest: r.ByDigest, Attrs: r.Extras().Attrs.Map()}
	if err := e.Validate(); err != nil {
		return err
	}
	for _, l := range r.Extras().Links {
		if clean, err := upstream.CleanName(l); err != nil || clean != l || l == r.Name {
			return fmt.Errorf("%w: %q: another name %q is not a clean name of its own", upstream.ErrBadEntry, r.Name, l)
		}
	}
	if r.ChunkSize < MinChunkSize || r.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: %q: chunk size %d is outside [%d, %d]", upstream.ErrBadEntry, r.Name,
			r.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	return nil
}
