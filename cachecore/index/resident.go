package index

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// badger maps its table files, and reading every record at start-up
// touches every page of them: 124 MB of a million records, which stayed
// in the daemon's resident set (RssFile) long after, though nothing
// reads most of them again, and were a third of start-up's peak.
// pageOutTables hands those pages back to the kernel as each part of
// the records is read (LoadEach); a later read of the index faults in
// what it needs. MADV_PAGEOUT, not MADV_DONTNEED: the mappings are found
// in /proc/self/maps, and a table that compaction unmaps in between
// leaves its addresses to whatever is mapped next, which PAGEOUT never
// changes (it only reclaims; anonymous memory with no swap stays as it
// is), where DONTNEED would zero it.

// pageOutTables pages out the mappings of the index's table files; a
// kernel without MADV_PAGEOUT (before 5.4) keeps them.
func (x *Index) pageOutTables() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	dir, err := filepath.Abs(x.dir)
	if err != nil {
		return
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil { // the kernel shows the path it resolved
		dir = d
	}
	s := bufio.NewScanner(f)
	for s.Scan() {
		start, end, ok := tableMapping(s.Text(), dir)
		if ok {
			syscall.Syscall(syscall.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT)
		}
	}
}

// tableMapping parses a line of /proc/self/maps, and says whether it
// maps a table file of dir, and where.
func tableMapping(line, dir string) (start, end uintptr, ok bool) {
	f := strings.Fields(line) // address perms offset dev inode path
	if len(f) != 6 || filepath.Dir(f[5]) != dir || !strings.HasSuffix(f[5], ".sst") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(f[0], "-")
	s, err1 := strconv.ParseUint(a, 16, 64)
	e, err2 := strconv.ParseUint(b, 16, 64)
	if !found || err1 != nil || err2 != nil || e <= s {
		return 0, 0, false
	}
	return uintptr(s), uintptr(e), true
}
