package cachecore

import (
	"errors"
	"fmt"
	"time"
)

// Losing the storage. Someone may remove the cache directory (or its data
// or index directory), or move it away, under a running mount. The data
// files already open stay readable through their descriptors; nothing
// else can be stored or recorded (badger would retry writing its tables
// for ever, and Close with it). So once the flusher's tick (or a failed
// open) notices:
//
//   - it is logged once, and the root's user.imgcache.cache_error says so;
//   - images whose data file is open are served from it as before; their
//     missing chunks, and every other image, are read straight from the
//     upstream (as when the size limit leaves no room), and an image
//     whose file is gone says so in user.imgcache.error;
//   - nothing is fetched into the cache or flushed, index writes are held
//     (index/room.go) and Close does not wait on badger: a remount starts
//     afresh.

type storageLoss struct {
	err error
	at  time.Time
}

// storageLost says, with an error, that the storage was lost; nil while
// it is there.
func (c *Cache) storageLost() error {
	if l := c.lost.Load(); l != nil {
		return l.err
	}
	return nil
}

// checkStorage notices a lost storage, and lets the index write what it
// holds back once it can (index/room.go). The flusher calls it each tick.
func (c *Cache) checkStorage() {
	c.noticeLoss()
	c.idx.Retry()
}

// noticeLoss checks the cache, data and index directories, and returns
// the loss if the storage is lost (now or before).
func (c *Cache) noticeLoss() error {
	if err := c.storageLost(); err != nil {
		return err
	}
	err := c.dir.Gone()
	if err == nil {
		err = c.store.Gone()
	}
	if err == nil {
		err = c.idx.Gone()
	}
	if !errors.Is(err, ErrStorageLost) {
		return nil
	}
	if c.lost.CompareAndSwap(nil, &storageLoss{err: err, at: c.now()}) {
		c.log.Error(err.Error() + ": cached images are served from data files still open, everything else straight from the upstream;" +
			" nothing is stored or recorded any more; remount to cache again")
	}
	return c.storageLost()
}

// StorageError says what keeps the cache from storing or recording, and
// since when: the storage lost, or index writes held back (a full
// filesystem); nil if nothing does.
func (c *Cache) StorageError() (error, time.Time) {
	if l := c.lost.Load(); l != nil {
		return l.err, l.at
	}
	return c.idx.HeldErr()
}

// fileGone turns an image whose data file could not be opened, with the
// storage lost, into one read around the cache: its cached bytes went
// with the file. img.mu is held.
func (img *Image) fileGoneLocked(lost error) {
	img.present.Clear()
	img.hashState.resetLocked()
	img.recordErrorLocked(&Error{Op: "open cache file", Name: img.entry.Name,
		Err: fmt.Errorf("%w; its cached bytes went with it: reads are served straight from the upstream", lost)})
}
