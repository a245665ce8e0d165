// Package index is the cache's index: a badger database in
// <cache>/index holding a record per image version, its chunk map and its
// chunk sums, and the catalog's metadata. It keeps bytes and records; what
// they mean (images, chunks present) is cachecore's. Writes pass the room
// checks of room.go: when the filesystem is too full for badger (or the
// directory is gone) they are held in memory and written later; damage is
// found before badger meets it (damage.go) and what can be read of a
// damaged index is salvaged for a rebuild (salvage.go).
//
// Keys:
//
//	meta/schema   "1"; an index of another schema is refused
//	meta/catalog  CatalogMeta (JSON): when the catalog was last refreshed
//	meta/pins     PinRules (JSON): the pin rules (pins.go)
//	img/<id>      Record (JSON): one image version, its metadata and counters
//	map/<id>      chunk map (binary, chunkmap.Map.Marshal) of that image
//	sum/<id>      sha256 of each chunk of that image, concatenated
//
// Records of images in the current catalog have Listed set; the catalog is
// rebuilt from them at start-up, so ls works before the upstream answers.
// docs/design.md shows the same table; a test holds the two together.
package index

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/imgcache/imgcache/cachecore/store"
)

// Keys (see the package comment).
const (
	imgPrefix   = "img/"
	mapPrefix   = "map/"
	sumPrefix   = "sum/"
	catalogKey  = "meta/catalog"
	schemaKey   = "meta/schema"
	schemaValue = "1"
)

// Record is what the index keeps of one image version.
type Record struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ModTime     time.Time `json:"mtime,omitzero"`
	ETag        string    `json:"etag,omitempty"`
	Digest      string    `json:"digest,omitempty"`
	ChunkSize   int64     `json:"chunk_size"`
	Listed      bool      `json:"listed"`
	Verdict     Verdict   `json:"verdict,omitempty"`
	Hits        uint64    `json:"hits"`
	LastAccess  time.Time `json:"last_access,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Added       time.Time `json:"added"`
	// lifecycle (cachecore: pin.go, prefetch.go, clean.go)
	Pinned bool `json:"pinned,omitempty"`
	// catalog (cachecore: catalog*.go); absent in indexes written before
	// them, which read as they did
	ByDigest  bool      `json:"by_digest,omitempty"` // the ID is the digest's alone
	Content   bool      `json:"content,omitempty"`   // stored whole at intake (Entry.Content): never evicted
	QueuedAt  time.Time `json:"queued_at,omitzero"`  // in the prefetch queue since
	LastFetch time.Time `json:"last_fetch,omitzero"` // when a chunk last landed
	// Extra is nil for most images (an HTTP directory's): a record in
	// memory stays small. It is replaced, never changed in place
	// (records are copied into batches).
	Extra *Extra `json:"extra,omitempty"`
}

// Extra is what a listing says of an image beyond its version.
type Extra struct {
	Links     []string  `json:"links,omitempty"`     // the image's other names, sorted (ByDigest)
	Attrs     Attrs     `json:"attrs,omitempty"`     // upstream.Entry.Attrs of the first name
	RetiredAt time.Time `json:"retired_at,omitzero"` // left the catalog then, listed while cached (upstream.Retainer)
}

// Extras returns r.Extra, the zero Extra if nil.
func (r *Record) Extras() Extra {
	if r.Extra == nil {
		return Extra{}
	}
	return *r.Extra
}

// SetExtras sets r.Extra to (a copy of) e, nil if e is zero.
func (r *Record) SetExtras(e Extra) {
	if len(e.Links) == 0 && e.Attrs == "" && e.RetiredAt.IsZero() {
		r.Extra = nil
		return
	}
	x := e // only this copy escapes: a record of no extras costs nothing
	r.Extra = &x
}

// Verdict is the outcome of checking a complete image against its digest.
type Verdict string

const (
	Unchecked Verdict = ""
	Verified  Verdict = "verified"
	Invalid   Verdict = "invalid"
)

type CatalogMeta struct {
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	Source      string    `json:"source"`
	// StaleSince is when refreshes started failing (zero after a
	// success); kept so that a restart while the upstream is down still
	// says since when the catalog is stale.
	StaleSince time.Time `json:"stale_since,omitzero"`
}

// index is the badger database. Its writes pass the room checks of
// room.go: when the filesystem is too full for badger (or the
// directory is gone) they are held in memory and written later.
type Index struct {
	// read only
	dir     string
	log     *slog.Logger
	dirFile *os.File // the index directory: its descriptor shows a removal and gives the free space

	mu       sync.RWMutex // writes and reopening hold it, reads share it; protects the following
	db       *badger.DB   // nil only after a reopen failed
	readOnly bool         // opened read-only: too little room to open it for writing
	held     error        // why writes are held back (ErrHeld); nil while they go through
	heldAt   time.Time
	pending  pending // changes held back, written when writes go through again
}

// Sizes of badger's files. A new memtable log and the table made of it
// must fit in the free space kept for the index (writeMargin, within
// DefaultSpaceReserve: room.go), so memtables are small. Values up
// to valueThreshold (chunk sums of images up to 2048 chunks) stay in the
// tables; larger ones go to the value log, in files of valueLogFileSize.
const (
	memTableSize     = 2 << 20
	valueLogFileSize = 1 << 20
	valueThreshold   = 64 << 10
)

// badgerOptions sizes badger for an index of image records and chunk
// maps: its defaults take hundreds of MiB.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(memTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithValueLogFileSize(valueLogFileSize).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(2).
		WithCompactL0OnClose(true).
		WithVerifyValueChecksum(true)
}

func Open(dir string, log *slog.Logger) (*Index, error) {
	if err := store.CheckIndexDir(dir); err != nil { // badger opens by path
		return nil, err
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	x := &Index{dir: dir, log: log, dirFile: f}
	x.mu.Lock()
	err = x.openLocked()
	x.mu.Unlock()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := x.checkSchema(); err != nil {
		x.Close()
		return nil, err
	}
	return x, nil
}

// openBadger opens the database, its tables checked first and a panic
// of badger's recovered (damage.go), turning badger's complaints
// into errors that say what is wrong.
func (x *Index) openBadger(readOnly bool) (db *badger.DB, err error) {
	opts := badgerOptions(x.dir, x.log).WithReadOnly(readOnly)
	if err := checkTables(x.dir, opts); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, damaged(x.dir, p)
		}
	}()
	db, err = badger.Open(opts)
	switch {
	case err == nil:
		return db, nil
	case strings.Contains(err.Error(), "Cannot acquire directory lock"):
		return nil, fmt.Errorf("%w: %v", store.ErrLocked, err)
	case truncateNeeded.MatchString(err.Error()): // read-only, after a crash (openReadOnly)
		return nil, fmt.Errorf("open index %s: %w", x.dir, err)
	case isDamage(err):
		return nil, damaged(x.dir, err)
	default:
		return nil, fmt.Errorf("open index %s: %w", x.dir, err)
	}
}

// checkSchema refuses an index of another schema and marks a new one
// (when it can write).
func (x *Index) checkSchema() error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(schemaKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			if x.readOnly {
				return nil // marked when it is reopened for writing
			}
			return txn.Set([]byte(schemaKey), []byte(schemaValue))
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err == nil && string(v) != schemaValue {
			err = fmt.Errorf("index schema %q, this imgcache reads %q", v, schemaValue)
		}
		return err
	})
}

// Loaded is the whole index, read once at start-up.
type Loaded struct {
	Records []Record
	Maps    map[string][]byte // chunk maps by image ID
	Catalog CatalogMeta
	Pins    *PinRules // nil: the index has no meta/pins (written before pin rules)
}

// Load reads the index whole, its records in ID order (LoadEach hands
// them over one at a time instead).
func (x *Index) Load() (Loaded, error) {
	var parts [LoadParts][]Record
	l, err := x.LoadEach(func(p int, r *Record) error {
		parts[p] = append(parts[p], *r)
		return nil
	})
	for _, recs := range parts {
		l.Records = append(l.Records, recs...)
	}
	return l, err
}

// Batch collects index changes to write together.
type Batch struct {
	Records []Record
	// More, if not nil, yields more records, made as they are written
	// (before Records, which may change them): the million new records
	// of a first listing are never held as Records at once.
	More    iter.Seq[Record]
	Maps    map[string][]byte // chunk maps by image ID
	Deletes []string          // image IDs: their record, chunk map and sums go
	Sums    map[string][]byte // chunk checksums to record, by image ID
	Catalog *CatalogMeta
	Pins    *PinRules // replaces the rules whole
}

func (b *Batch) Empty() bool {
	return len(b.Records) == 0 && b.More == nil && len(b.Maps) == 0 && len(b.Deletes) == 0 && len(b.Sums) == 0 &&
		b.Catalog == nil && b.Pins == nil
}

func (b *Batch) PutMap(id string, m []byte) {
	if b.Maps == nil {
		b.Maps = make(map[string][]byte)
	}
	b.Maps[id] = m
}

// Write writes a Batch, or, while writes are held back (room.go),
// keeps it to write later and returns the reason (ErrHeld).
func (x *Index) Write(b *Batch) error {
	if b.Empty() {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pending.empty() {
		// Nothing held back: b goes as it is. (Through pending, the
		// million records of a first listing were copied into a map and
		// out again: a GB for a moment.)
		need, big := b.size()
		if x.admitLocked(need, big) == nil {
			if err := x.writeBatch(b); err == nil || errors.Is(err, ErrUnencodable) {
				return err
			}
		}
	}
	x.pending.add(b)
	return x.writePendingLocked()
}

// ErrUnencodable: a record JSON cannot hold (a time outside the years
// 0-9999, which upstream.Entry.Validate keeps out of listings) is not
// stored; the rest of its batch is. Held back like a write that found no
// room, it would never be written, and every write after it would wait
// behind it.
var ErrUnencodable = errors.New("index record cannot be encoded")

// writeBatch writes b to badger in one batch; x.mu is held. Records that
// cannot be encoded are left out, and said so (ErrUnencodable) once the
// rest is written.
func (x *Index) writeBatch(b *Batch) error {
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	var unencodable []error
	// Deletes first: a record set after its image was deleted (the same
	// ID listed again) must not bring back the old chunk map or sums.
	for _, id := range b.Deletes {
		if err := wb.Delete([]byte(imgPrefix + id)); err != nil {
			return err
		}
		if err := wb.Delete([]byte(mapPrefix + id)); err != nil {
			return err
		}
		if err := wb.Delete([]byte(sumPrefix + id)); err != nil {
			return err
		}
	}
	setRecord := func(r *Record) error {
		v, err := json.Marshal(r)
		if err != nil {
			unencodable = append(unencodable, fmt.Errorf("%w: %s (%q): %v", ErrUnencodable, r.ID, r.Name, err))
			return nil
		}
		return wb.Set([]byte(imgPrefix+r.ID), v)
	}
	if b.More != nil {
		for r := range b.More {
			if err := setRecord(&r); err != nil {
				return err
			}
		}
	}
	for i := range b.Records {
		if err := setRecord(&b.Records[i]); err != nil {
			return err
		}
	}
	for id, m := range b.Maps {
		if err := wb.Set([]byte(mapPrefix+id), m); err != nil {
			return err
		}
	}
	for id, s := range b.Sums {
		if err := wb.Set([]byte(sumPrefix+id), s); err != nil {
			return err
		}
	}
	if b.Catalog != nil {
		v, err := json.Marshal(b.Catalog)
		if err != nil {
			return err
		}
		if err := wb.Set([]byte(catalogKey), v); err != nil {
			return err
		}
	}
	if b.Pins != nil {
		v, err := json.Marshal(b.Pins)
		if err != nil {
			return err
		}
		if err := wb.Set([]byte(pinsKey), v); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return errors.Join(unencodable...)
}

// badgerLogger keeps badger's chatter out of the daemon's log: its
// warnings and errors go to slog, the rest is dropped.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, a...))
	if strings.HasPrefix(msg, "Received err: ") {
		return // Open failed: its error says it
	}
	l.log.Error("index: " + msg)
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("index: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
