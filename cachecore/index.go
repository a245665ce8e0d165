package cachecore

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/imgcache/imgcache/cachecore/store"
)

// The index is a badger database in <cache>/index. Keys:
//
//	img/<id>      record (JSON): one image version, its metadata and counters
//	map/<id>      chunk map (binary, see chunkmap.Map.Marshal) of that image
//	sum/<id>      sha256 of each chunk of that image, concatenated (sums.go)
//	meta/catalog  catalogMeta (JSON): when the catalog was last refreshed
//
// Records of images in the current catalog have Listed set; the catalog is
// rebuilt from them at start-up, so ls works before the upstream answers.
const (
	imgPrefix   = "img/"
	mapPrefix   = "map/"
	sumPrefix   = "sum/"
	catalogKey  = "meta/catalog"
	schemaKey   = "meta/schema"
	schemaValue = "1"
)

// record is what the index keeps of one image version.
type record struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ModTime     time.Time `json:"mtime,omitzero"`
	ETag        string    `json:"etag,omitempty"`
	Digest      string    `json:"digest,omitempty"`
	ChunkSize   int64     `json:"chunk_size"`
	Listed      bool      `json:"listed"`
	Verdict     verdict   `json:"verdict,omitempty"`
	Hits        uint64    `json:"hits"`
	LastAccess  time.Time `json:"last_access,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Added       time.Time `json:"added"`
	// lifecycle (pin.go, prefetch.go, clean.go)
	Pinned    bool      `json:"pinned,omitempty"`
	QueuedAt  time.Time `json:"queued_at,omitzero"`  // in the prefetch queue since
	LastFetch time.Time `json:"last_fetch,omitzero"` // when a chunk last landed
}

// verdict is the outcome of checking a complete image against its digest.
type verdict string

const (
	unchecked verdict = ""
	verified  verdict = "verified"
	invalid   verdict = "invalid"
)

type catalogMeta struct {
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	Source      string    `json:"source"`
	// StaleSince is when refreshes started failing (zero after a
	// success); kept so that a restart while the upstream is down still
	// says since when the catalog is stale.
	StaleSince time.Time `json:"stale_since,omitzero"`
}

// index is the badger database. Its writes pass the room checks of
// indexroom.go: when the filesystem is too full for badger (or the
// directory is gone) they are held in memory and written later.
type index struct {
	// read only
	dir     string
	log     *slog.Logger
	dirFile *os.File // the index directory: its descriptor shows a removal and gives the free space

	mu       sync.RWMutex // writes and reopening hold it, reads share it; protects the following
	db       *badger.DB   // nil only after a reopen failed
	readOnly bool         // opened read-only: too little room to open it for writing
	held     error        // why writes are held back (ErrIndexHeld); nil while they go through
	heldAt   time.Time
	pending  pending // changes held back, written when writes go through again
}

// Sizes of badger's files. A new memtable log and the table made of it
// must fit in the free space kept for the index (writeMargin, within
// DefaultSpaceReserve: indexroom.go), so memtables are small. Values up
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

func openIndex(dir string, log *slog.Logger) (*index, error) {
	if err := store.CheckIndexDir(dir); err != nil { // badger opens by path
		return nil, err
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	x := &index{dir: dir, log: log, dirFile: f}
	x.mu.Lock()
	err = x.openLocked()
	x.mu.Unlock()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := x.checkSchema(); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

// openBadger opens the database, its tables checked first and a panic
// of badger's recovered (indexdamage.go), turning badger's complaints
// into errors that say what is wrong.
func (x *index) openBadger(readOnly bool) (db *badger.DB, err error) {
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
		return nil, fmt.Errorf("%w: %v", ErrLocked, err)
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
func (x *index) checkSchema() error {
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

// loaded is the whole index, read once at start-up.
type loaded struct {
	records []record
	maps    map[string][]byte
	catalog catalogMeta
}

func (x *index) load() (l loaded, err error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	defer func() { // badger may panic on damage it meets (indexdamage.go)
		if p := recover(); p != nil {
			err = damaged(x.dir, p)
		}
	}()
	l = loaded{maps: make(map[string][]byte)}
	var raws []rawRecord
	err = x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key())
			if strings.HasPrefix(key, sumPrefix) {
				continue // read when checked, not at start-up
			}
			err := item.Value(func(v []byte) error {
				switch {
				case strings.HasPrefix(key, imgPrefix):
					raws = append(raws, rawRecord{key, append([]byte(nil), v...)}) // decoded below
				case strings.HasPrefix(key, mapPrefix):
					l.maps[key[len(mapPrefix):]] = append([]byte(nil), v...)
				case key == catalogKey:
					return json.Unmarshal(v, &l.catalog)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return l, damaged(x.dir, err)
	}
	l.records, err = decodeRecords(raws)
	if err != nil {
		err = damaged(x.dir, err)
	}
	return l, err
}

// batch collects index changes to write together.
type batch struct {
	records []record
	maps    map[string][]byte
	deletes []string
	sums    map[string][]byte // chunk checksums to record, by image ID
	catalog *catalogMeta
}

func (b *batch) empty() bool {
	return len(b.records) == 0 && len(b.maps) == 0 && len(b.deletes) == 0 && len(b.sums) == 0 && b.catalog == nil
}

func (b *batch) putMap(id string, m []byte) {
	if b.maps == nil {
		b.maps = make(map[string][]byte)
	}
	b.maps[id] = m
}

// write writes a batch, or, while writes are held back (indexroom.go),
// keeps it to write later and returns the reason (ErrIndexHeld).
func (x *index) write(b *batch) error {
	if b.empty() {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.pending.add(b)
	return x.writePendingLocked()
}

// writeBatch writes b to badger in one batch; x.mu is held.
func (x *index) writeBatch(b *batch) error {
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
	// Deletes first: a record set after its image was deleted (the same
	// ID listed again) must not bring back the old chunk map or sums.
	for _, id := range b.deletes {
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
	for _, r := range b.records {
		v, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := wb.Set([]byte(imgPrefix+r.ID), v); err != nil {
			return err
		}
	}
	for id, m := range b.maps {
		if err := wb.Set([]byte(mapPrefix+id), m); err != nil {
			return err
		}
	}
	for id, s := range b.sums {
		if err := wb.Set([]byte(sumPrefix+id), s); err != nil {
			return err
		}
	}
	if b.catalog != nil {
		v, err := json.Marshal(b.catalog)
		if err != nil {
			return err
		}
		if err := wb.Set([]byte(catalogKey), v); err != nil {
			return err
		}
	}
	return wb.Flush()
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
