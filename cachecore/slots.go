package cachecore

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// Fetch slots. At most Config.MaxFetches range requests are in flight at
// once, and at most half of them (rounded up) for one image: an image
// whose upstream trickles holds its share, never every slot, and the
// other images' reads go on. A reader queues for its slot in turn (the
// semaphores are FIFO); read-ahead and prefetch take only a slot that is
// free now, and prefetch leaves one free for readers.
type fetchSlots struct {
	// read only
	all      *semaphore.Weighted // every slot
	max      int64
	perImage int64

	mu     sync.Mutex             // protects the following
	images map[*Image]*imageSlots // images holding or waiting for slots
	freed  chan struct{}          // closed (and replaced) when a slot is given back
}

// imageSlots is one image's share of the slots.
type imageSlots struct {
	sem   *semaphore.Weighted
	users int // holders and waiters; the entry goes when none is left
}

func newFetchSlots(n int) *fetchSlots {
	return &fetchSlots{all: semaphore.NewWeighted(int64(n)), max: int64(n), perImage: int64(n+1) / 2,
		images: make(map[*Image]*imageSlots), freed: make(chan struct{})}
}

func (s *fetchSlots) share(img *Image) *imageSlots {
	s.mu.Lock()
	defer s.mu.Unlock()
	is := s.images[img]
	if is == nil {
		is = &imageSlots{sem: semaphore.NewWeighted(s.perImage)}
		s.images[img] = is
	}
	is.users++
	return is
}

func (s *fetchSlots) unshare(img *Image) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if is := s.images[img]; is != nil {
		if is.users--; is.users == 0 {
			delete(s.images, img)
		}
	}
}

// acquire waits for a slot for img, in turn, until ctx ends.
func (s *fetchSlots) acquire(ctx context.Context, img *Image) error {
	is := s.share(img)
	if err := is.sem.Acquire(ctx, 1); err != nil {
		s.unshare(img)
		return err
	}
	if err := s.all.Acquire(ctx, 1); err != nil {
		is.sem.Release(1)
		s.unshare(img)
		return err
	}
	return nil
}

// tryAcquire takes a slot for img if one is free now and nobody waits,
// leaving spare slots free besides (no more than exist).
func (s *fetchSlots) tryAcquire(img *Image, spare int64) bool {
	spare = min(spare, s.max-1)
	is := s.share(img)
	if !is.sem.TryAcquire(1) {
		s.unshare(img)
		return false
	}
	if !s.all.TryAcquire(1 + spare) {
		is.sem.Release(1)
		s.unshare(img)
		return false
	}
	if spare > 0 {
		s.all.Release(spare)
	}
	return true
}

// release gives back a slot img holds.
func (s *fetchSlots) release(img *Image) {
	s.mu.Lock()
	is := s.images[img]
	freed := s.freed
	s.freed = make(chan struct{})
	s.mu.Unlock()
	is.sem.Release(1)
	s.all.Release(1)
	s.unshare(img)
	close(freed)
}

// released is closed when a slot is next given back.
func (s *fetchSlots) released() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freed
}
