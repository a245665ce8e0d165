package index

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sync/errgroup"
)

// Start-up reads every record of the index before the mount answers: a
// million of them for a large mirror. JSON decoding is most of the work,
// so the records are read in LoadParts ranges of IDs, side by side, and
// each is handed over as it is decoded: the index's bytes and a slice of
// every Record are never held at once (they were 1.3 KB an image).

// LoadParts is how many ranges of IDs LoadEach reads side by side.
const LoadParts = 16

// partStart is where part p of the records starts: the first character
// of an ID, lowercase hex; part 0 also takes IDs that sort before "1",
// the last those after "f" (malformed IDs, which start-up drops).
func partStart(p int) []byte {
	if p == 0 {
		return []byte(imgPrefix)
	}
	return []byte(imgPrefix + string("0123456789abcdef"[p]))
}

// LoadEach reads the index whole, as Load, but hands each record to each
// as it is decoded rather than returning them: from one goroutine per
// part (at most GOMAXPROCS at once), in ID order within a part, part p's
// IDs sorting before part p+1's. r is valid only during the call (each
// copies what it keeps; its strings are its own). The Loaded it returns
// has no Records.
func (x *Index) LoadEach(each func(part int, r *Record) error) (l Loaded, err error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	defer func() { // badger may panic on damage it meets (damage.go)
		if p := recover(); p != nil {
			err = damaged(x.dir, p)
		}
	}()
	l = Loaded{Maps: make(map[string][]byte)}
	err = x.db.View(func(txn *badger.Txn) error {
		for _, key := range []string{catalogKey, pinsKey} {
			item, err := txn.Get([]byte(key))
			if err == badger.ErrKeyNotFound {
				continue
			}
			if err != nil {
				return err
			}
			err = item.Value(func(v []byte) error {
				if key == catalogKey {
					return json.Unmarshal(v, &l.Catalog)
				}
				l.Pins = &PinRules{}
				return json.Unmarshal(v, l.Pins)
			})
			if err != nil {
				return err
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(mapPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			l.Maps[string(item.Key()[len(mapPrefix):])] = v
		}
		return nil
	})
	if err != nil {
		return l, damaged(x.dir, err)
	}
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for p := range LoadParts {
		g.Go(func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = damaged(x.dir, v)
				}
			}()
			defer x.pageOutTables() // what the part read (resident.go)
			return x.loadPart(p, each)
		})
	}
	return l, g.Wait()
}

// loadPart decodes the records of part p.
func (x *Index) loadPart(p int, each func(part int, r *Record) error) error {
	var end []byte
	if p+1 < LoadParts {
		end = partStart(p + 1)
	}
	var eachErr error
	var r Record // one for the part: each copies what it keeps
	err := x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 100, Prefix: []byte(imgPrefix)})
		defer it.Close()
		for it.Seek(partStart(p)); it.Valid(); it.Next() {
			item := it.Item()
			if end != nil && bytes.Compare(item.Key(), end) >= 0 {
				break
			}
			r = Record{}
			err := item.Value(func(v []byte) error {
				if err := decodeRecord(v, &r); err != nil { // fastrecord.go
					return fmt.Errorf("index key %s: %w", strings.ToValidUTF8(string(item.Key()), "?"), err)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if eachErr = each(p, &r); eachErr != nil {
				return eachErr
			}
		}
		return nil
	})
	switch {
	case err == nil || err == eachErr:
		return err
	default:
		return damaged(x.dir, err)
	}
}

// RecordsEstimate is about how many records the index holds, from its
// tables' key counts, for the room LoadEach's caller makes for them: at
// least as many, most of the time (records not yet written to a table
// are left out; earlier versions of records and the keys of chunk maps
// and sums are counted).
func (x *Index) RecordsEstimate() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.db == nil {
		return 0
	}
	n := 0
	for _, t := range x.db.Tables() {
		// The keys of a table run from Left to Right (with badger's
		// version after each): it holds records if it reaches past imgPrefix
		// and starts before the first key after all records.
		if string(t.Right) >= imgPrefix && string(t.Left) < imgEnd {
			n += int(t.KeyCount)
		}
	}
	return n
}

// imgEnd sorts after every key of a record.
const imgEnd = "img0" // '0' follows '/'
