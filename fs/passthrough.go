package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kernel passthrough (Linux 6.9+, CAP_SYS_ADMIN): an open of a settled
// image (complete and, if it has a digest, verified) hands the kernel the
// data file, and reads never reach this process. go-fuse registers the
// file at open (PassthroughFd); if registering ever fails it silently turns
// passthrough off for the whole mount, so the mount probes once, at start,
// and only then lets handles offer their file.

var _ = (gofs.FilePassthroughFder)((*imageHandle)(nil))

// backingRegistrar is what the probe needs of a *fuse.Server.
type backingRegistrar interface {
	RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(int32) syscall.Errno
}

// ServeMode says how the kernel reads images that are settled: straight
// from the data file (passthrough: the daemon never sees those reads), or
// through FUSE, keeping the pages cached across opens. The mount decides
// it once, by probing the kernel (ProbePassthrough); stats and the root's
// xattrs show it.
type ServeMode string

const (
	// ServePassthrough: opens of settled images are handed to the kernel.
	ServePassthrough ServeMode = "passthrough"
	// ServePageCache: every read reaches the daemon unless the kernel's
	// page cache (kept across opens of settled images) has it.
	ServePageCache ServeMode = "page-cache"
)

// ServeMode is how this filesystem serves settled images (ServePageCache
// until a probe found passthrough works).
func (r *Root) ServeMode() ServeMode {
	if r.passthrough.Load() {
		return ServePassthrough
	}
	return ServePageCache
}

// ProbePassthrough checks that the kernel accepts a file in dir (the
// cache directory: its filesystem is what matters) as a passthrough
// backing file, and if so serves settled images by passthrough from now
// on. It returns why passthrough cannot be used, or nil if it is in use.
func (r *Root) ProbePassthrough(server *fuse.Server, dir string) error {
	err := probeBacking(server, dir)
	r.passthrough.Store(err == nil)
	return err
}

func probeBacking(server backingRegistrar, dir string) error {
	f, err := os.CreateTemp(dir, ".passthrough-probe-")
	if err != nil {
		return fmt.Errorf("passthrough probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		return fmt.Errorf("the kernel refused a backing file in %s: %w", filepath.Clean(dir), errno)
	}
	server.UnregisterBackingFd(id)
	return nil
}

// ioModes tracks an image node's opens in each mode. The kernel refuses
// (EIO) a passthrough open of an inode that has opens in its caching
// mode, so an image that becomes settled while readers still have it open
// keeps being served through the daemon until they close. And while an
// open of the node is passthrough, go-fuse makes every new open of it
// passthrough too, whatever PassthroughFd says (it asks only when the
// node has no backing file registered): such an open counts as one.
type ioModes struct {
	mu          sync.Mutex // protects the following
	cachedOpens int        // opens answered without passthrough, not yet released
	passOpens   int        // passthrough opens, not yet released
}

// openFlags decides how this open is served: passthrough if the mount
// has it, the image is settled and no open of it uses the caching mode;
// else through the daemon, keeping the kernel's pages across opens when
// the cache says they may be kept (Image.KeepPages: a settled image, or
// in lazy mode a complete one whose verdict is still to come, so that a
// re-read right after a cold read is served from the pages that read
// left rather than through the daemon while the hash catches up).
func (fh *imageHandle) openFlags() uint32 {
	n := fh.node
	passthrough := n.rootNode().ServeMode() == ServePassthrough
	if passthrough && n.img.Complete() {
		n.modes.awaitReleases()
	}
	settled := n.img.Complete() // complete and, with a digest, verified
	fh.passthrough = n.modes.open(passthrough && settled)
	if !settled && !n.img.KeepPages() {
		return 0
	}
	return fuse.FOPEN_KEEP_CACHE // go-fuse drops it when it sets FOPEN_PASSTHROUGH
}

// open counts an open and says whether it is passthrough: wanted (the
// mount has passthrough and the image is settled) and no open is in the
// caching mode, or forced by go-fuse (a passthrough open is alive).
func (m *ioModes) open(wanted bool) (passthrough bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	passthrough = m.passOpens > 0 || wanted && m.cachedOpens == 0
	if passthrough {
		m.passOpens++
	} else {
		m.cachedOpens++
	}
	return passthrough
}

// releaseWait bounds how long an open of a settled image waits for the
// releases of earlier opens in caching mode. The kernel sends RELEASE
// after close(2) returns, so a reader that opens an image again right
// after reading it cold (cat, then sha256sum) would otherwise find its
// own first open still counted, and be served through the daemon.
const releaseWait = 50 * time.Millisecond

// awaitReleases waits (at most releaseWait) until no open of the node
// is in caching mode. An open that really stays open costs a later
// opener this wait once per open, and that opener then uses caching mode.
func (m *ioModes) awaitReleases() {
	deadline := time.Now().Add(releaseWait)
	for {
		m.mu.Lock()
		n := m.cachedOpens
		m.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// releaseMode ends this open's part in the node's io mode, and reports
// whether it was the last open in caching mode.
//
// The kernel drops the open's mode only when it reads our reply to
// RELEASE, which go-fuse writes after Release returns (and go-fuse lets
// go of the node's backing file after Release returns too): an open of
// the image that saw a count fall to zero at once could be answered in
// the other mode before that, and the kernel would fail it with EIO
// (seen under load), or go-fuse would make it passthrough unasked. So the
// count falls modeSettle later, off the request's goroutine.
func (fh *imageHandle) releaseMode() bool {
	m := &fh.node.modes
	count := &m.cachedOpens
	if fh.passthrough {
		count = &m.passOpens
	}
	m.mu.Lock()
	last := !fh.passthrough && m.cachedOpens == 1
	m.mu.Unlock()
	time.AfterFunc(modeSettle, func() {
		m.mu.Lock()
		*count--
		m.mu.Unlock()
	})
	return last
}

// modeSettle is how long after a caching-mode release this process
// still counts the open (see releaseMode); well under releaseWait.
const modeSettle = 10 * time.Millisecond

// dropPagesAtRelease reports whether the release of the last open in
// caching mode should drop the kernel's pages of the image: once it is
// settled and the mount has passthrough, later opens read the data file,
// so those pages only double the memory the image takes. Dropping them
// now, off the read path, also spares the next open: an open without
// FOPEN_KEEP_CACHE (passthrough ones are) drops them itself, which cost
// the first warm read of a 1 GiB image a third of its time.
func (fh *imageHandle) dropPagesAtRelease(lastCached bool) bool {
	return lastCached && fh.node.rootNode().ServeMode() == ServePassthrough && fh.node.img.Complete()
}

// PassthroughFd offers the data file to the kernel when this open is
// passthrough. The kernel keeps its own reference to the file; ours stays
// open until Release anyway.
func (fh *imageHandle) PassthroughFd() (int, bool) {
	return int(fh.fd), fh.passthrough
}
