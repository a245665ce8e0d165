package index

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgcache/imgcache/cachecore/store"
)

// smallFS mounts a tmpfs of the given size for the test (it needs root).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs (the test needs root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fill writes a file of zeros into dir until the filesystem is full; it
// returns the file's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "fill")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

func testRecord(i int) Record {
	return Record{ID: fmt.Sprintf("%064x", i), Name: fmt.Sprintf("img%03d", i), Size: 1 << 20, ChunkSize: 1 << 16, Listed: true}
}

// TestIndexHeldOnFullFilesystem: with its filesystem filled by someone
// else the index neither crashes nor loses anything: writes are held
// back (ErrHeld, sums readable meanwhile), and written once there
// is room again; a restart finds them.
func TestIndexHeldOnFullFilesystem(t *testing.T) {
	fsDir := smallFS(t, "24m")
	dir := filepath.Join(fsDir, "index")
	x, err := Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Write(&Batch{Records: []Record{testRecord(0)}}); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, fsDir)

	var b Batch
	for i := 1; i < 500; i++ {
		b.Records = append(b.Records, testRecord(i))
		b.PutMap(testRecord(i).ID, bytes.Repeat([]byte{0xff}, 2))
	}
	b.Sums = map[string][]byte{testRecord(7).ID: bytes.Repeat([]byte{7}, 64)}
	err = x.Write(&b)
	if !errors.Is(err, ErrHeld) || !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("write on a full filesystem: %v, want it held back for want of space", err)
	}
	if held, _ := x.HeldErr(); held == nil {
		t.Fatal("the index does not say its writes are held back")
	}
	if s, err := x.Sums(testRecord(7).ID); err != nil || len(s) != 64 {
		t.Fatalf("sums held back: %d bytes, %v", len(s), err)
	}
	x.Retry() // still full: nothing changes
	if held, _ := x.HeldErr(); held == nil {
		t.Fatal("writes go through on a full filesystem")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	x.Retry()
	if held, _ := x.HeldErr(); held != nil {
		t.Fatalf("writes still held back with room again: %v", held)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	x, err = Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	l, err := x.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 500 || len(l.Maps) != 499 {
		t.Fatalf("after the restart: %d records, %d maps; want 500, 499", len(l.Records), len(l.Maps))
	}
	if s, _ := x.Sums(testRecord(7).ID); len(s) != 64 {
		t.Fatal("sums written while held back were lost")
	}
}

// TestIndexOpensReadOnlyOnFullFilesystem: an index on a filesystem too
// full to open it for writing opens read-only, with what it holds
// readable, even with a log left by a daemon that did not close it (read
// only, badger refuses such a log until its tail is cut); it becomes
// writable once there is room.
func TestIndexOpensReadOnlyOnFullFilesystem(t *testing.T) {
	fsDir := smallFS(t, "24m")
	dir := filepath.Join(fsDir, "index")
	// A daemon that dies leaves its memtable log: copy the files of an
	// index in use.
	live := filepath.Join(t.TempDir(), "index")
	x, err := Open(live, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var b Batch
	for i := range 50 {
		b.Records = append(b.Records, testRecord(i))
	}
	if err := x.Write(&b); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := copyDir(live, dir); err != nil {
		t.Fatal(err)
	}
	x.Close()
	os.Remove(filepath.Join(dir, "LOCK"))
	if mems, _ := filepath.Glob(filepath.Join(dir, "*.mem")); len(mems) == 0 {
		t.Fatal("no memtable log to replay")
	}
	filler := fill(t, fsDir)

	x, err = Open(dir, discardLogger())
	if err != nil {
		t.Fatalf("open on a full filesystem: %v", err)
	}
	if !x.readOnly {
		t.Fatal("opened for writing on a full filesystem")
	}
	l, err := x.Load()
	if err != nil || len(l.Records) != 50 {
		t.Fatalf("read-only: %d records, %v; want 50", len(l.Records), err)
	}
	if err := x.Write(&Batch{Records: []Record{testRecord(50)}}); !errors.Is(err, ErrHeld) {
		t.Fatalf("write to a read-only index: %v, want it held back", err)
	}
	held, _ := x.HeldErr()
	if held == nil || !strings.Contains(held.Error(), "read-only") {
		t.Fatalf("held: %v, want it to say the index is read-only", held)
	}

	os.Remove(filler)
	x.Retry()
	if held, _ := x.HeldErr(); held != nil || x.readOnly {
		t.Fatalf("with room again: read-only %v, held %v", x.readOnly, held)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	x, err = Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if l, _ := x.Load(); len(l.Records) != 51 {
		t.Fatalf("after reopening: %d records, want 51", len(l.Records))
	}
}

// TestIndexFirstStartOnFullFilesystem: no index and no room to make one
// is an error that says so, not a crash.
func TestIndexFirstStartOnFullFilesystem(t *testing.T) {
	fsDir := smallFS(t, "8m")
	fill(t, fsDir)
	_, err := Open(filepath.Join(fsDir, "index"), discardLogger())
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("open on a full filesystem: %v, want ErrNoSpace", err)
	}
	t.Log(err)
}

// TestPendingKeepsTheLatest: held-back batches merge into what one Batch
// written in their place would do.
func TestPendingKeepsTheLatest(t *testing.T) {
	var p pending
	a, b := testRecord(1), testRecord(2)
	p.add(&Batch{Records: []Record{a, b}, Maps: map[string][]byte{a.ID: {1}}, Sums: map[string][]byte{a.ID: {1}}})
	a.Hits = 5
	p.add(&Batch{Records: []Record{a}})
	p.add(&Batch{Deletes: []string{b.ID}})
	p.add(&Batch{Deletes: []string{a.ID}})
	a.Hits = 9
	p.add(&Batch{Records: []Record{a}}) // listed again after its delete
	if len(p.records) != 1 || p.records[a.ID].Hits != 9 {
		t.Fatalf("records %v", p.records)
	}
	if len(p.maps) != 0 || len(p.sums) != 0 {
		t.Fatal("a map or sums from before the delete survived it")
	}
	if s, ok := p.lookupSums(a.ID); !ok || s != nil {
		t.Fatal("sums of a deleted image found")
	}
	got := p.batch()
	if len(got.Deletes) != 2 || len(got.Records) != 1 {
		t.Fatalf("Batch: %d deletes, %d records", len(got.Deletes), len(got.Records))
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
