package cachecore

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Hashing at a low priority. The hash of an image grows while the image
// is read cold (hashing.go), and sha256 costs about as much CPU as the
// cold path itself: on a machine whose cores are busy, the hash would
// slow the reads. So the hasher's goroutines run on threads of their own
// (runtime.LockOSThread: a locked thread ends with its goroutine) at nice
// hashNice, which the kernel runs after the readers' threads when both
// want the CPU; when the CPU has room, they keep up with the reads.
//
// A goroutine holds one of the runtime's Ps while it runs, also while the
// kernel has put its thread aside for others: the process is given two
// Ps more than it would have, one per hashing thread (the hasher, and
// the pass that makes a verified image's chunk sums), so that readers
// never wait for a P that a low-priority thread holds.

// hashNice is the hashing threads' nice value (0 normal, 19 lowest).
const hashNice = 10

var morePs sync.Once

// reservePs gives the process a P for each hashing thread.
func reservePs() {
	morePs.Do(func() { runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 2) })
}

// lowPriority gives the calling goroutine a thread of its own, at nice
// hashNice, for the rest of its life. If the kernel refuses, it runs at
// the normal priority.
func lowPriority() {
	runtime.LockOSThread()
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), hashNice)
}

// normalPriority puts the calling goroutine's thread (locked by
// lowPriority) back at nice 0: once every chunk of an image has landed,
// its verdict is all that keeps the next open from passthrough, and the
// readers that nice 10 gave way to are now re-readers served by the
// daemon until then (they starved it: 1 GiB was verified only after 3 to
// 5 re-reads through the daemon, now after 1 or 2). Lowering a nice
// value needs CAP_SYS_NICE or RLIMIT_NICE; without, the hash stays low.
func normalPriority() {
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 0)
}

// lowestPriority puts the calling goroutine's thread (locked by
// lowPriority) at nice 19, for work nobody waits for.
func lowestPriority() {
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
}
