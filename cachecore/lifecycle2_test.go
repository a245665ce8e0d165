package cachecore

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

func TestQueueAndPinSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	up, _ := lifecycleFake(3, 300*kib)
	off := withLifecycle(Lifecycle{Prefetchers: -1}) // nothing fetched: the queue waits
	c := openTest(t, dir, up, off)
	if err := c.Queue("img01"); err != nil {
		t.Fatal(err)
	}
	if err := c.Queue("img02"); err != nil {
		t.Fatal(err)
	}
	if err := c.Pin("img00", true); err != nil {
		t.Fatal(err)
	}
	if err := c.Queue("nonesuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Queue of an unknown image: %v", err)
	}
	if got := c.Queued(); !slices.Equal(got, []string{"img01", "img02", "img00"}) {
		t.Errorf("Queued() = %v", got)
	}
	if err := c.Dequeue("img02"); err != nil {
		t.Fatal(err)
	}
	if got := c.Queued(); !slices.Equal(got, []string{"img01", "img00"}) {
		t.Errorf("Queued() after Dequeue = %v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	c = openTest(t, dir, up, off)
	info0, info1, info2 := mustLookup(t, c, "img00").Info(), mustLookup(t, c, "img01").Info(), mustLookup(t, c, "img02").Info()
	if !info0.Pinned || !info1.Queued || info2.Queued || info0.State != StateAbsent {
		t.Errorf("after restart: img00 %+v, img01 queued %v, img02 queued %v", info0, info1.Queued, info2.Queued)
	}
	if got := c.Queued(); !slices.Equal(got, []string{"img00", "img01"}) { // pinned first: no QueuedAt
		t.Errorf("Queued() after restart = %v", got)
	}
	c.Close()

	c = openTest(t, dir, up) // prefetchers on
	defer c.Close()
	waitFor(t, func() bool { return len(c.Queued()) == 0 })
	for name, want := range map[string]State{"img00": StateComplete, "img01": StateComplete, "img02": StateAbsent} {
		info := mustLookup(t, c, name).Info()
		if info.State != want || info.Queued || info.Hits != 0 {
			t.Errorf("%s: state %s queued %v hits %d, want %s, not queued, no hits", name, info.State, info.Queued, info.Hits, want)
		}
	}
	if !mustLookup(t, c, "img00").Pinned() {
		t.Error("img00 lost its pin")
	}
}

// TestPrefetchLeavesASlotForReaders: with two fetch slots, two
// prefetchers working on two images hold one slot between them, and a
// reader gets the other.
func TestPrefetchLeavesASlotForReaders(t *testing.T) {
	up, _ := lifecycleFake(3, 1<<20)
	gate := make(chan struct{})
	up.SetGate(gate)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.MaxFetches = 2
		cfg.Prefetchers = 2
	})
	defer func() {
		close(gate)
		c.Close()
	}()
	c.Queue("img00")
	c.Queue("img01")
	waitFor(t, func() bool { return up.Requests() == 1 })
	time.Sleep(200 * time.Millisecond) // the prefetchers poll for slots every 10 ms
	if n := up.Requests(); n != 1 {
		t.Fatalf("prefetchers made %d requests with two slots; want 1, the other slot left to readers", n)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h, err := c.Open(mustLookup(t, c, "img02"))
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		if _, err := h.Read(context.Background(), 0, 4096); err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, func() bool { return up.Requests() == 2 })
	gate <- struct{}{} // let the reader's request through (either one: both proceed in time)
	gate <- struct{}{}
	wg.Wait()
}

func TestCleanerReapsStalledAndInvalid(t *testing.T) {
	up, _ := lifecycleFake(4, 512*kib)
	up.SetDigest("img03", upstreamtest.Digest([]byte("not these bytes")))
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.now = clock
		cfg.ReadAhead = -1
		cfg.StallTime = time.Hour
		cfg.Prefetchers = -1 // a pinned partial image stays partial
	})
	defer c.Close()
	readPart := func(name string) {
		h, err := c.Open(mustLookup(t, c, name))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.ReadAt(make([]byte, 4096), 0); err != nil {
			t.Fatal(err)
		}
	}
	readPart("img00") // partial: will stall
	readPart("img01") // partial and pinned
	if err := c.Pin("img01", true); err != nil {
		t.Fatal(err)
	}
	readAll(t, c, mustLookup(t, c, "img02")) // complete
	readAll(t, c, mustLookup(t, c, "img03")) // invalid once verified
	waitFor(t, func() bool { return mustLookup(t, c, "img03").Info().State == StateInvalid })

	d, err := c.CleanNow(context.Background())
	if err != nil || !slices.Equal(d.Evicted, []string{"img03"}) {
		t.Errorf("clean before the stall time reaped %v (%v), want only the invalid img03", d.Evicted, err)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	d, err = c.CleanNow(context.Background())
	if err != nil || !slices.Equal(d.Evicted, []string{"img00"}) {
		t.Errorf("clean after the stall time reaped %v (%v), want only the stalled img00", d.Evicted, err)
	}
	want := map[string]State{"img00": StateAbsent, "img01": StatePartial, "img02": StateComplete, "img03": StateAbsent}
	for name, st := range want {
		if got := mustLookup(t, c, name).Info().State; got != st {
			t.Errorf("%s after cleaning: %s, want %s", name, got, st)
		}
	}
	if mustLookup(t, c, "img03").Info().LastError == "" {
		t.Error("the reaped invalid image lost the error that says why")
	}
}
