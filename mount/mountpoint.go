package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// fsType is the filesystem type of an imgcache mount in mountinfo
// (go-fuse's "fuse." + MountOptions.Name).
const fsType = "fuse.imgcache"

// checkMountpoint refuses, unless nonempty is set, to mount over a
// directory that holds files (they would be hidden until the unmount) or
// over a live imgcache mount (of another cache directory: one of the same
// would meet its lock). libfuse 2 refused a non-empty mountpoint unless
// given -o nonempty; fuse3 dropped the check, and mount(2) never had it;
// imgcache keeps fuse2's default. A mount left by a daemon that died has
// been cleaned up before this is asked.
func checkMountpoint(mnt string, nonempty bool) error {
	if nonempty {
		return nil
	}
	if typ, err := mountedAt(mnt); err != nil {
		return err
	} else if typ == fsType {
		return fmt.Errorf("mountpoint %q already has a live imgcache mount; unmount it first (--nonempty mounts over it)", mnt)
	}
	d, err := os.Open(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("mountpoint: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %q is not empty (it holds %q); mounting would hide its files: use an empty directory (--nonempty mounts over them)", mnt, names[0])
	}
	return nil
}

// mountedAt returns the filesystem type of what is mounted at dir (the
// topmost mount, if several are stacked there), or "" if dir is no
// mountpoint.
func mountedAt(dir string) (string, error) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real // mountinfo names the real path
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	typ := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if point, t, ok := parseMountinfo(sc.Text()); ok && point == dir {
			typ = t // later lines are mounted on top of earlier ones
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading the mount table: %w", err)
	}
	return typ, nil
}

// parseMountinfo reads the mount point and filesystem type of a line of
// /proc/self/mountinfo: "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 -
// ext3 /dev/root rw" (proc(5)); the mount point has space, tab, newline
// and backslash escaped in octal.
func parseMountinfo(line string) (point, typ string, ok bool) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
		return "", "", false
	}
	return unescapeOctal(f[4]), f[sep+1], true
}

// unescapeOctal undoes the kernel's \ooo escapes in mountinfo.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
