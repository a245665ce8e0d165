package index

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
)

// Salvaged is what is kept of an image from a damaged index.
type Salvaged struct {
	Sums      []byte
	ChunkSize int64 // from its record; 0 if that was not readable (the caller checks its bounds)
}

// Salvage reads what it can of the damaged index in dir: the latest
// version of each image's chunk sums and record, and of the pin rules
// (nil if none could be read), from the tables that pass their checksums
// and from its logs, replayed on a copy. What cannot be read is not
// there; the damaged index is not changed.
func Salvage(dir string, log *slog.Logger) (map[string]Salvaged, *PinRules) {
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
	out := make(map[string]Salvaged)
	var pins *PinRules
	for k, v := range s.latest {
		if v.value == nil {
			continue // deleted, or in the value log (unreadable without the tables)
		}
		if k == pinsKey {
			var p PinRules
			if json.Unmarshal(v.value, &p) == nil {
				pins = &p
			}
		}
		if id, ok := strings.CutPrefix(k, sumPrefix); ok && len(v.value)%sha256.Size == 0 {
			si := out[id]
			si.Sums = v.value
			out[id] = si
		}
		if id, ok := strings.CutPrefix(k, imgPrefix); ok {
			var r Record
			if json.Unmarshal(v.value, &r) == nil && r.ChunkSize > 0 {
				si := out[id]
				si.ChunkSize = r.ChunkSize
				out[id] = si
			}
		}
	}
	return out, pins
}

// Flags of badger's value meta (badger's value.go), which its table
// iterators hand out as they are.
const (
	badgerBitDelete       = 1 << 0
	badgerBitValuePointer = 1 << 1
)

type salvager struct {
	latest map[string]salvagedValue // by key: sum/ and img/ keys and meta/pins only
}

type salvagedValue struct {
	version uint64
	value   []byte // nil: deleted, or unreadable
}

// keep keeps a version of a key if it is the latest seen.
func (s *salvager) keep(key []byte, version uint64, value []byte) {
	k := string(key)
	if !strings.HasPrefix(k, sumPrefix) && !strings.HasPrefix(k, imgPrefix) && k != pinsKey {
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
