package index

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// Sums returns the chunk checksums recorded for an image: the sha256 of
// each chunk, concatenated; nil if none were recorded.
func (x *Index) Sums(id string) ([]byte, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if s, ok := x.pending.lookupSums(id); ok { // held back (room.go)
		return s, nil
	}
	if x.db == nil {
		return nil, x.held
	}
	var v []byte
	err := x.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(sumPrefix + id))
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	return v, err
}
