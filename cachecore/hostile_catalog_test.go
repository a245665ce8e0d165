package cachecore

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// listing returns the shared fake upstream listing entries exactly as
// given, whatever they say (upstreamtest.AddEntry: any range of any of
// them reads as bytes that depend only on the offset).
func listing(entries ...upstream.Entry) *upstreamtest.Upstream {
	up := upstreamtest.New("hostile://up/")
	for _, e := range entries {
		up.AddEntry(e)
	}
	return up
}

var goodModTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestHostileSizesAreRefusedPerEntry: a listing with sizes no image can
// have (2^63-1 panicked in makeslice, 2^62 ran the process out of
// memory) and times no clock can hold is taken without the bad entries,
// which are logged; the good ones are served, and so after a restart.
func TestHostileSizesAreRefusedPerEntry(t *testing.T) {
	dir := t.TempDir()
	up := listing([]upstream.Entry{
		{Name: "max.img", Size: math.MaxInt64, ModTime: goodModTime},
		{Name: "huge.img", Size: 1 << 62, ModTime: goodModTime},
		{Name: "over.img", Size: upstream.MaxSize + 1, ModTime: goodModTime},
		{Name: "past.img", Size: 10, ModTime: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Name: "future.img", Size: 10, ModTime: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Name: "bigdigest.img", Size: 10, Digest: "sha256:" + strings.Repeat("A", 64)},
		{Name: "ok.img", Size: 100_000, ModTime: goodModTime},
		{Name: "edge.img", Size: upstream.MaxSize, ModTime: goodModTime},
	}...)
	var log strings.Builder
	c := openTest(t, dir, up, func(cfg *Config) { cfg.Logger = textLogger(&log) })
	checkServed := func(c *Cache) {
		t.Helper()
		for _, bad := range []string{"max.img", "huge.img", "over.img", "past.img", "future.img", "bigdigest.img"} {
			if _, ok := c.Lookup(bad); ok {
				t.Errorf("%s is in the catalog", bad)
			}
		}
		img := mustLookup(t, c, "ok.img")
		got := readAll(t, c, img)
		for i, b := range got {
			if b != byte(i) {
				t.Fatalf("ok.img byte %d = %d", i, b)
			}
		}
		if e := mustLookup(t, c, "edge.img"); e.Size() != upstream.MaxSize || e.Info().CachedBytes != 0 {
			t.Fatalf("edge.img: %+v", e.Info())
		}
	}
	checkServed(c)
	for _, bad := range []string{"max.img", "huge.img", "over.img", "past.img", "future.img", "bigdigest.img"} {
		if !strings.Contains(log.String(), bad) {
			t.Errorf("log does not name refused entry %s:\n%s", bad, log.String())
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, up)
	defer c.Close()
	checkServed(c)
}

// textLogger logs to w as text, at every level.
func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&lockedWriter{w: w}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lockedWriter lets goroutines log to one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestHostileRecordsInIndexDoNotCrashStart: records that an earlier
// daemon took from a hostile catalog (sizes and times no image can have,
// a chunk size no cache uses) are dropped at start-up with a log line;
// the other images keep their cached bytes.
func TestHostileRecordsInIndexDoNotCrashStart(t *testing.T) {
	dir := t.TempDir()
	up := listing(upstream.Entry{Name: "ok.img", Size: 300_000, ModTime: goodModTime})
	c := openTest(t, dir, up)
	readAll(t, c, mustLookup(t, c, "ok.img"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	bad := []index.Record{
		{Name: "max.img", Size: math.MaxInt64},
		{Name: "huge.img", Size: 1 << 62},
		{Name: "negative.img", Size: -5},
		{Name: "past.img", Size: 10, ModTime: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Name: "nochunks.img", Size: 10, ChunkSize: -1},
		{Name: "odd/../name.img", Size: 10},
	}
	idx, err := index.Open(filepath.Join(dir, "index"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var b index.Batch
	for i, r := range bad {
		r.ID = fmt.Sprintf("%064x", i+1)
		r.Listed = true
		if r.ChunkSize == 0 {
			r.ChunkSize = 64 << 10
		}
		b.Records = append(b.Records, r)
		b.PutMap(r.ID, []byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 0, 0, 0, 0})
	}
	if err := idx.Write(&b); err != nil {
		t.Fatal(err)
	}
	if err := idx.Close(); err != nil {
		t.Fatal(err)
	}

	var log strings.Builder
	c = openTest(t, dir, up, func(cfg *Config) { cfg.Logger = textLogger(&log) })
	for _, r := range bad {
		if _, ok := c.Lookup(r.Name); ok {
			t.Errorf("%s is in the catalog", r.Name)
		}
		if !strings.Contains(log.String(), r.Name) {
			t.Errorf("log does not name the refused record %s:\n%s", r.Name, log.String())
		}
	}
	img := mustLookup(t, c, "ok.img")
	if info := img.Info(); info.CachedBytes != img.Size() {
		t.Fatalf("ok.img lost its cached bytes: %+v", info)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	idx, err = index.Open(filepath.Join(dir, "index"), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	l, err := idx.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Records) != 1 || l.Records[0].Name != "ok.img" {
		t.Fatalf("index keeps %d records after start-up, want ok.img's alone", len(l.Records))
	}
}
