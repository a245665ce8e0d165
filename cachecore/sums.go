package cachecore

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
)

// sums returns the chunk checksums recorded for an image: the sha256 of
// each chunk, concatenated; nil if none were recorded.
func (x *index) sums(id string) ([]byte, error) {
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
