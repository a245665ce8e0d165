package index

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/cachecore/store"
)

// Room for the index. badger writes its logs (a memtable's .mem file, the
// value log's .vlog files) and its tables through mmap, into files it
// makes by truncating them to size: sparse files. A write into a hole
// needs a block, and on a full filesystem that fault is a SIGBUS that
// kills the daemon, not an error (on tmpfs even reading a hole needs a
// page). Another program filling the cache filesystem did that, and again
// at every start while the disk stayed full. So:
//
//   - Before every write the logs badger writes next (the newest memtable
//     log, which every write goes through, and the newest value log) get
//     what the write may put in them allocated past their data
//     (fallocate): the write lands in blocks that exist, however full the
//     filesystem gets meanwhile. Only that much is allocated ahead, so the
//     index's size on disk stays what it holds.
//   - A write goes through only while writeMargin plus what it writes is
//     free: within it badger may start a new memtable log (whose first
//     write is the only one not allocated ahead) and write a table.
//   - Otherwise writes are held back (ErrHeld): the index keeps what
//     it has, keeps the changes in memory (the latest of each key) and
//     writes them once there is room again (each write and each flush tick
//     checks); cached images are served as before and the root's
//     user.imgcache.cache_error says why. Data is stopped earlier still
//     (SpaceReserve, store/freespace.go), so it is another program that fills
//     the filesystem this far.
//   - A start with too little room to open the index for writing (which
//     creates logs and replays old ones into tables) opens it read-only
//     and reopens it for writing once there is room.
//   - Close writes the held changes if there is room, else leaves the
//     database as a crash would (its log is replayed at the next start):
//     closing flushes the memtable into a new table, which needs room.
//
// What is left: a new log or table badger starts within the margin at
// the moment another program takes the last of it.

// ErrHeld: index writes are held back in memory (the filesystem is
// too full, or the index directory is gone); they are written when there
// is room again.
var ErrHeld = errors.New("index writes are held back")

// writeMargin is the free space a write leaves at least: room for badger
// to start a new memtable log and to write a table of the old one.
const writeMargin = 3 * memTableSize

// aheadSlack is allocated past a log's data beyond what a write needs.
const aheadSlack = 16 << 10

// closeTimeout bounds badger's Close (flushing the memtable, compacting).
const closeTimeout = 10 * time.Second

// free is the space left on the index's filesystem for this user.
func (x *Index) free() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(x.dirFile.Fd()), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Gone says, with an error, that the index directory was removed or
// replaced: badger creates its files by path, and they would go nowhere
// (or elsewhere).
func (x *Index) Gone() error {
	return store.DirGone(int(x.dirFile.Fd()), x.dir)
}

// openRoom is the free space a start needs to open the index for
// writing: a new memtable log and value log, the tables of the logs it
// replays, and a MiB to spare.
func (x *Index) openRoom() int64 {
	n := int64(2*memTableSize + 2<<20)
	ents, _ := os.ReadDir(x.dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mem") {
			if fi, err := e.Info(); err == nil {
				n += store.Allocated(fi) // what it holds: the table it becomes
			}
		}
	}
	return n
}

// openLocked opens badger: for writing if there is room, else read-only
// with writes held back.
func (x *Index) openLocked() error {
	need := x.openRoom()
	free, err := x.free()
	if err != nil || free >= need {
		db, err := x.openBadger(false)
		if err != nil {
			return err
		}
		x.db, x.readOnly = db, false
		return nil
	}
	if _, err := os.Stat(filepath.Join(x.dir, "MANIFEST")); err != nil {
		return fmt.Errorf("%w: %d MiB free in %s; creating the index needs %d MiB", store.ErrNoSpace, free>>20, x.dir, mib(need))
	}
	db, err := x.openReadOnly()
	if err != nil {
		return err
	}
	x.db, x.readOnly = db, true
	x.holdLocked(fmt.Errorf("%w: %d MiB free, %d MiB needed to open the index for writing; it is open read-only",
		store.ErrNoSpace, free>>20, mib(need)))
	return nil
}

// openReadOnly opens badger read-only, which writes nothing. It first
// cuts the unallocated tail off the memtable logs (reading a hole of a
// mapped file on a full tmpfs is a SIGBUS too), then the tail past their
// last whole transaction, which a daemon that did not close them leaves
// and read-only badger refuses ("log truncate required"), as badger
// itself does when it opens them for writing. Shrinking needs no room.
func (x *Index) openReadOnly() (*badger.DB, error) {
	ents, err := os.ReadDir(x.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".mem") {
			if err := truncateToData(filepath.Join(x.dir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	for range 8 {
		db, err := x.openBadger(true)
		if err == nil {
			return db, nil
		}
		m := truncateNeeded.FindStringSubmatch(err.Error())
		if m == nil {
			return nil, err
		}
		fid, _ := strconv.Atoi(m[1])
		end, _ := strconv.ParseInt(m[2], 10, 64)
		if err := os.Truncate(filepath.Join(x.dir, fmt.Sprintf("%05d.mem", fid)), end); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("open index %s read-only: its logs keep needing repair", x.dir)
}

// truncateNeeded finds, in badger's refusal to open a memtable log
// read-only, which log and where its last whole transaction ends.
var truncateNeeded = regexp.MustCompile(`while opening fid: (\d+)\b.*end offset: (\d+) < size: \d+`)

// truncateToData cuts a file at its first hole: badger writes its logs
// from the start, so nothing is after it.
func truncateToData(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil || hole >= fi.Size() {
		return err
	}
	return f.Truncate(hole)
}

// preallocate allocates room past the data of the logs badger writes
// next: need bytes (and aheadSlack) in the newest memtable log, and as
// much in the newest value log as the values it takes (over
// valueThreshold) need.
func (x *Index) preallocate(need, big int64) error {
	ents, err := os.ReadDir(x.dir)
	if err != nil {
		return err
	}
	var mem, vlog string // names sort by number: the last is the newest
	for _, e := range ents {
		switch n := e.Name(); {
		case strings.HasSuffix(n, ".mem") && n > mem:
			mem = n
		case strings.HasSuffix(n, ".vlog") && n > vlog:
			vlog = n
		}
	}
	for _, l := range []struct {
		name string
		n    int64
	}{{mem, need + aheadSlack}, {vlog, big}} {
		if l.name == "" || l.n == 0 {
			continue
		}
		if err := allocateAhead(int(x.dirFile.Fd()), l.name, l.n); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: %w", l.name, err) // ENOENT: badger deleted it meanwhile
		}
	}
	return nil
}

// allocateAhead allocates n bytes past the data of a log (within its
// size). badger writes its logs from the start and zeroes past what it
// wrote, so the data ends at the last byte that is not zero before the
// first hole.
func allocateAhead(dirfd int, name string, n int64) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	hole, err := unix.Seek(fd, 0, unix.SEEK_HOLE)
	if err != nil || hole >= st.Size {
		return err
	}
	end, err := dataEnd(fd, hole)
	if err != nil {
		return err
	}
	if want := min(end+n, st.Size); want > hole {
		return unix.Fallocate(fd, 0, hole, want-hole)
	}
	return nil
}

// dataEnd is the offset after the last byte before off that is not zero.
func dataEnd(fd int, off int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for off > 0 {
		from := max(0, off-int64(len(buf)))
		k, err := unix.Pread(fd, buf[:off-from], from)
		if err != nil {
			return 0, err
		}
		for i := k - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return from + int64(i) + 1, nil
			}
		}
		off = from
	}
	return 0, nil
}

// writePendingLocked writes the held-back changes if the index may
// write; else it says why not (ErrHeld). x.mu is held.
func (x *Index) writePendingLocked() error {
	if err := x.admitLocked(x.pending.bytes, x.pending.big); err != nil {
		return err
	}
	if x.pending.empty() {
		return nil
	}
	err := x.writeBatch(x.pending.batch())
	if err != nil && !errors.Is(err, ErrUnencodable) {
		return err // kept: the next write tries them again
	}
	x.pending = pending{}
	return err
}

// admitLocked says whether a write of about need bytes (big of them in
// large values) may go to badger now, holding writes back (and saying so,
// once) when not, and letting them through again (and saying so) when
// there is room once more.
func (x *Index) admitLocked(need, big int64) error {
	if err := x.Gone(); err != nil {
		return x.holdLocked(err)
	}
	free, err := x.free()
	if err != nil {
		return x.holdLocked(err)
	}
	if x.readOnly || x.db == nil {
		if open := x.openRoom(); free < open {
			return x.holdLocked(fmt.Errorf("%w: %d MiB free, %d MiB needed to open the index for writing; it is open read-only",
				store.ErrNoSpace, free>>20, mib(open)))
		}
		if err := x.reopenLocked(); err != nil {
			return x.holdLocked(err)
		}
	}
	if want := writeMargin + need; free < want {
		return x.holdLocked(fmt.Errorf("%w: %d MiB free, %d MiB needed to write the index",
			store.ErrNoSpace, free>>20, mib(want)))
	}
	if err := x.preallocate(need, big); err != nil {
		return x.holdLocked(fmt.Errorf("%w: allocating room in the index's logs: %v", store.ErrNoSpace, err))
	}
	if x.held != nil {
		x.log.Info("index writes go through again", "held_since", x.heldAt.Format(time.RFC3339))
		x.held, x.heldAt = nil, time.Time{}
	}
	return nil
}

// holdLocked holds writes back for reason, logging it when the reason
// changes, and returns the error writes get meanwhile.
func (x *Index) holdLocked(reason error) error {
	err := fmt.Errorf("%w: %w; changes are kept in memory and written when it can write again", ErrHeld, reason)
	if x.held == nil || x.held.Error() != err.Error() {
		x.log.Warn("index: " + err.Error())
	}
	if x.held == nil {
		x.heldAt = time.Now()
	}
	x.held = err
	return err
}

// reopenLocked reopens a read-only database for writing; if that fails
// it goes back to read-only.
func (x *Index) reopenLocked() error {
	if x.db != nil {
		if err := x.db.Close(); err != nil {
			return err
		}
		x.db = nil
	}
	db, err := x.openBadger(false)
	if err != nil {
		if ro, rerr := x.openReadOnly(); rerr == nil {
			x.db = ro
		}
		return err
	}
	x.db, x.readOnly = db, false
	x.log.Info("index reopened for writing")
	return nil
}

// Retry writes the held-back changes if it can now, so that they land
// (and the hold ends) without waiting for the next change.
func (x *Index) Retry() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.held != nil {
		x.writePendingLocked()
	}
}

// HeldErr says why writes are held back, and since when; nil if they
// are not.
func (x *Index) HeldErr() (error, time.Time) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.held, x.heldAt
}

// Close writes what is held back if it can and closes badger, within
// closeTimeout. If it cannot write, it leaves badger as a crash would:
// its log holds everything written and is replayed at the next start,
// while closing would flush the memtable into a new table, which needs
// room (or a directory) there is not.
func (x *Index) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	defer x.dirFile.Close()
	if x.db == nil {
		return nil
	}
	var lost error
	switch err := x.writePendingLocked(); {
	case err == nil:
	case errors.Is(err, store.ErrStorageLost):
		return nil // nothing left to close
	case !x.readOnly:
		return fmt.Errorf("index left unclosed, as a crash would leave it (its log is replayed at the next start)%s: %w",
			x.pending.lost(), err)
	case !x.pending.empty():
		lost = fmt.Errorf("index closed read-only%s: %w", x.pending.lost(), err)
	}
	db := x.db
	x.db = nil
	done := make(chan error, 1)
	go func() { done <- db.Close() }()
	select {
	case err := <-done:
		return errors.Join(lost, err)
	case <-time.After(closeTimeout):
		return fmt.Errorf("closing the index did not finish within %v; its log is replayed at the next start", closeTimeout)
	}
}

// Size is the disk space of the index: its files' allocated bytes.
func (x *Index) Size() int64 {
	var n int64
	ents, _ := os.ReadDir(x.dir)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += store.Allocated(fi)
		}
	}
	return n
}

// GC runs badger's value-log GC until it finds nothing to rewrite, while
// the index may write (GC rewrites values into the value log).
func (x *Index) GC(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for ctx.Err() == nil {
		if x.admitLocked(valueLogFileSize, valueLogFileSize) != nil { // GC rewrites a value log's worth
			return nil // held back: GC waits too
		}
		err := x.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// pending is index changes held back: the latest of each key, and the
// images deleted (applied before the rest, as in one Batch).
type pending struct {
	records map[string]Record
	maps    map[string][]byte
	sums    map[string][]byte
	deletes map[string]bool
	catalog *CatalogMeta
	pins    *PinRules
	bytes   int64 // about what writing them takes
	big     int64 // of which in values that go to the value log
}

func (p *pending) empty() bool {
	return len(p.records) == 0 && len(p.maps) == 0 && len(p.sums) == 0 && len(p.deletes) == 0 && p.catalog == nil && p.pins == nil
}

// add takes in a Batch written after everything already pending.
func (p *pending) add(b *Batch) {
	if p.records == nil {
		p.records, p.maps, p.sums, p.deletes = map[string]Record{}, map[string][]byte{}, map[string][]byte{}, map[string]bool{}
	}
	for _, id := range b.Deletes { // in a Batch deletes come first (writeBatch)
		delete(p.records, id)
		delete(p.maps, id)
		delete(p.sums, id)
		p.deletes[id] = true
	}
	if b.More != nil {
		for r := range b.More {
			p.records[r.ID] = r
		}
	}
	for _, r := range b.Records {
		p.records[r.ID] = r
	}
	for id, m := range b.Maps {
		p.maps[id] = m
	}
	for id, s := range b.Sums {
		p.sums[id] = s
	}
	if b.Catalog != nil {
		p.catalog = b.Catalog
	}
	if b.Pins != nil {
		p.pins = b.Pins
	}
	p.bytes, p.big = 0, 0
	for _, vs := range []map[string][]byte{p.maps, p.sums} {
		for id, v := range vs {
			p.bytes += int64(len(id) + len(v) + 64)
			if len(v) > valueThreshold {
				p.big += int64(len(v) + 64)
			}
		}
	}
	for _, r := range p.records {
		p.bytes += int64(400 + 2*len(r.Name) + len(r.ETag) + len(r.Digest) + len(r.LastError)) // about its JSON
	}
	if p.pins != nil {
		for _, r := range p.pins.Rules {
			p.bytes += int64(100 + len(r.Pattern))
		}
	}
	p.bytes += int64(len(p.deletes))*256 + 1024
}

// size is about what writing b takes, as pending counts it.
func (b *Batch) size() (bytes, big int64) {
	for _, vs := range []map[string][]byte{b.Maps, b.Sums} {
		for id, v := range vs {
			bytes += int64(len(id) + len(v) + 64)
			if len(v) > valueThreshold {
				big += int64(len(v) + 64)
			}
		}
	}
	for _, r := range b.Records {
		bytes += int64(400 + 2*len(r.Name) + len(r.ETag) + len(r.Digest) + len(r.LastError)) // about its JSON
	}
	if b.More != nil {
		for r := range b.More {
			bytes += int64(400 + 2*len(r.Name) + len(r.ETag) + len(r.Digest) + len(r.LastError))
		}
	}
	if b.Pins != nil {
		for _, r := range b.Pins.Rules {
			bytes += int64(100 + len(r.Pattern))
		}
	}
	return bytes + int64(len(b.Deletes))*256 + 1024, big
}

func (p *pending) batch() *Batch {
	b := &Batch{Maps: p.maps, Sums: p.sums, Catalog: p.catalog, Pins: p.pins}
	for id := range p.deletes {
		b.Deletes = append(b.Deletes, id)
	}
	for _, r := range p.records {
		b.Records = append(b.Records, r)
	}
	return b
}

// sums looks up chunk sums held back: the sums (ok), or that the image
// was deleted (ok, nil).
func (p *pending) lookupSums(id string) (s []byte, ok bool) {
	if s, ok := p.sums[id]; ok {
		return s, true
	}
	return nil, p.deletes[id]
}

// lost describes, for the log, what leaving the changes unwritten loses.
func (p *pending) lost() string {
	if p.empty() {
		return ""
	}
	return fmt.Sprintf("; %d image records, %d chunk maps and %d sets of chunk sums held back are lost",
		len(p.records), len(p.maps), len(p.sums))
}
