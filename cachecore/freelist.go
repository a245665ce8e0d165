package cachecore

// freeList keeps up to a fixed number of fetch buffers for reuse. Unlike
// a sync.Pool, which the collector empties at every cycle, it keeps them:
// a cold read of any length reuses the same few buffers, so the daemon's
// memory does not grow with how long it reads. A Get with the list empty
// allocates; a Put with the list full drops the buffer. The buffers in
// use are bounded by the fetch slots (and one verify, one sums' pass,
// one check).
type freeList struct {
	free chan *[]byte
	size int
}

func newFreeList(n, size int) *freeList {
	return &freeList{free: make(chan *[]byte, n), size: size}
}

// Get returns a *[]byte of the list's size (as any, like sync.Pool).
func (l *freeList) Get() any {
	select {
	case b := <-l.free:
		return b
	default:
		b := make([]byte, l.size)
		return &b
	}
}

// Put returns a buffer got from Get.
func (l *freeList) Put(x any) {
	select {
	case l.free <- x.(*[]byte):
	default:
	}
}
