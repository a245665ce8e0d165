package cachecore

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The index is a badger database in <cache>/index. Keys:
//
//	img/<id>      record (JSON): one image version, its metadata and counters
//	map/<id>      chunk map (binary, see chunkMap.marshal) of that image
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

type index struct {
	db *badger.DB
}

func openIndex(dir string, log *slog.Logger) (*index, error) {
	if err := checkIndexDir(dir); err != nil { // badger opens by path (dirsafety.go)
		return nil, err
	}
	// badger's defaults take hundreds of MiB; an index of image records
	// and chunk maps is small, so size memtables and caches down.
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithValueLogFileSize(64 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2).
		WithCompactL0OnClose(true)
	db, err := badger.Open(opts)
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, fmt.Errorf("%w: %v", ErrLocked, err)
		}
		return nil, fmt.Errorf("open index %s: %w", dir, err)
	}
	x := &index{db: db}
	if err := x.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return x, nil
}

func (x *index) checkSchema() error {
	return x.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(schemaKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
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

func (x *index) close() error { return x.db.Close() }

// loaded is the whole index, read once at start-up.
type loaded struct {
	records []record
	maps    map[string][]byte
	catalog catalogMeta
}

func (x *index) load() (loaded, error) {
	l := loaded{maps: make(map[string][]byte)}
	var raws []rawRecord
	err := x.db.View(func(txn *badger.Txn) error {
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
		return l, err
	}
	l.records, err = decodeRecords(raws)
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

func (x *index) write(b *batch) error {
	if b.empty() {
		return nil
	}
	wb := x.db.NewWriteBatch()
	defer wb.Cancel()
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
	l.log.Error("index: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("index: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
