package mount

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/fs"
)

// Request sizes. The kernel sends READs of at most max_pages (MaxWrite
// sets it; up to 1 MiB on Linux 4.20+, a little less here, see below);
// its read-ahead window for the mount is the bdi's read_ahead_kb, which
// FUSE starts at 128 KiB and which INIT can only lower. A cold sequential
// reader is paced by how much the kernel asks at once: raising
// read_ahead_kb after mounting keeps several large READs in flight, which
// our fetcher turns into parallel range requests.
const (
	maxRequest  = 254 * 4096
	readAheadKB = 8 * maxRequest / 1024
)

// Why 254 pages and not 256 (1 MiB): go-fuse answers a READ by splicing
// the data file into a pipe and the pipe into /dev/fuse, which moves page
// references rather than bytes; the pipe must hold the reply plus a page,
// and pipes are capped at fs.pipe-max-size (1 MiB by default). A 1 MiB
// READ does not fit, and go-fuse falls back to reading the bytes into a
// buffer and writing them out: one more copy of every byte served.

// tuneMountOptions sets the request sizes of a mount.
func tuneMountOptions(o *fuse.MountOptions) {
	o.MaxWrite = maxRequest     // also max_read and max_pages
	o.MaxReadAhead = maxRequest // INIT can only lower it; see raiseReadAhead
	// ls -l asks every file for security.selinux and
	// system.posix_acl_access: two GETXATTR round trips per file, which
	// the kernel stops sending only after ENOSYS (never allowed here: it
	// turns off our own xattrs). With POSIX_ACL negotiated this kernel
	// (6.18) still sends the ACL one every time, so that is not used.
	// go-fuse answers the ACL and capability names itself (ENODATA),
	// which saves a little of each round trip.
	o.IgnoreSecurityLabels = true
}

// raiseReadAhead sets the mount's bdi read-ahead (needs root; without it
// the kernel's 128 KiB stays, which works, slower). It returns the bdi
// path it changed.
func raiseReadAhead(mnt string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		return "", err
	}
	bdi := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", devMajor(st.Dev), devMinor(st.Dev))
	if err := os.WriteFile(bdi, []byte(strconv.Itoa(readAheadKB)), 0); err != nil {
		return bdi, err
	}
	return bdi, nil
}

// devMajor and devMinor split a Linux dev_t (see makedev(3)).
func devMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func devMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

// tuneMount runs once the mount answers: it raises the kernel's
// read-ahead and probes kernel passthrough, saying once in the log when
// either is not available.
func tuneMount(root *fs.Root, server *fuse.Server, mnt, cacheDir string, log *slog.Logger) {
	if bdi, err := raiseReadAhead(mnt); err != nil {
		log.Info("kernel read-ahead left at its default; cold sequential reads are slower", "bdi", bdi, "err", err)
	}
	if err := root.ProbePassthrough(server, cacheDir); err != nil {
		log.Info("kernel passthrough unavailable; complete images are served through the page cache", "err", err)
	}
}
