package cachecore

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// trickle is the shared fake upstream listing entries (their bytes
// depend only on the offset) whose bodies, for the images named in slow,
// trickle: step bytes, then a pause of every, until the request's context
// ends. It counts the bodies of slow images that are open.
type trickle struct {
	*upstreamtest.Upstream
	slow  map[string]bool
	step  int
	every time.Duration

	active atomic.Int64 // slow bodies open now
}

func newTrickle(entries []upstream.Entry, slow map[string]bool, step int, every time.Duration) *trickle {
	u := &trickle{Upstream: upstreamtest.New("trickle://up/"), slow: slow, step: step, every: every}
	for _, e := range entries {
		u.AddEntry(e)
	}
	u.SetBody(func(ctx context.Context, name string, body io.ReadCloser) io.ReadCloser {
		if !u.slow[name] {
			return body
		}
		u.active.Add(1)
		return &trickleBody{u: u, ctx: ctx, r: body}
	})
	return u
}

type trickleBody struct {
	u      *trickle
	ctx    context.Context
	r      io.Reader
	closed sync.Once
}

func (b *trickleBody) Read(p []byte) (int, error) {
	t := time.NewTimer(b.u.every)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.ctx.Done():
		return 0, b.ctx.Err() // what net/http says: no cause
	}
	return b.r.Read(p[:min(len(p), b.u.step)])
}

func (b *trickleBody) Close() error {
	b.closed.Do(func() { b.u.active.Add(-1) })
	return nil
}

// TestLowSpeedLimitCutsATrickle: a reply that keeps sending, but less
// than the low-speed limit, is cancelled (ErrTooSlow, a stall) though a
// reader still waits for it; the image's error says so.
func TestLowSpeedLimitCutsATrickle(t *testing.T) {
	up := newTrickle([]upstream.Entry{{Name: "slow.img", Size: 1 << 20}},
		map[string]bool{"slow.img": true}, 1, 5*time.Millisecond)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.LowSpeedLimit, cfg.LowSpeedTime = 64<<10, 300*time.Millisecond
		cfg.RetryMax, cfg.ReadTimeout = -1, time.Hour
	})
	defer c.Close()
	img := mustLookup(t, c, "slow.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	_, err = h.ReadAt(make([]byte, 100), 0)
	if !errors.Is(err, ErrTooSlow) || !upstream.Temporary(err) {
		t.Fatalf("read of a trickle: %v; want ErrTooSlow, temporary", err)
	}
	if le := img.Info().LastError; !strings.Contains(le, "low-speed limit") {
		t.Fatalf("image error %q does not name the low-speed limit", le)
	}
	waitFor(t, func() bool { return up.active.Load() == 0 && c.Stats().FetchesInFlight.Load() == 0 })
}

// TestAbandonedFetchIsCancelled: a fetch whose readers all gave up (read
// timeout) is cancelled and its slot freed, without the low-speed limit.
func TestAbandonedFetchIsCancelled(t *testing.T) {
	up := newTrickle([]upstream.Entry{{Name: "slow.img", Size: 1 << 20}},
		map[string]bool{"slow.img": true}, 1, 10*time.Millisecond)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.LowSpeedLimit, cfg.ReadTimeout, cfg.abandonAfter = -1, 200*time.Millisecond, 50*time.Millisecond
	})
	defer c.Close()
	img := mustLookup(t, c, "slow.img")
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.ReadAt(make([]byte, 100), 0); !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("read of a trickle: %v; want the read timeout", err)
	}
	waitFor(t, func() bool { return up.active.Load() == 0 && c.Stats().FetchesInFlight.Load() == 0 })
	if le := img.Info().LastError; strings.Contains(le, errAbandoned.Error()) {
		t.Fatalf("the image's error is the abandonment, not the reader's timeout: %q", le)
	}
}

// TestTricklingImageDoesNotStarveOthers: readers of a trickling image
// hold at most its share of the fetch slots; another image reads
// meanwhile, and once the trickle's readers give up its slots come back.
func TestTricklingImageDoesNotStarveOthers(t *testing.T) {
	const chunk = 64 << 10
	up := newTrickle([]upstream.Entry{{Name: "slow.img", Size: 64 * chunk}, {Name: "fast.img", Size: 40 * chunk}},
		map[string]bool{"slow.img": true}, 1, 20*time.Millisecond)
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.MaxFetches, cfg.LowSpeedLimit, cfg.ReadTimeout, cfg.abandonAfter = 4, -1, time.Hour, 50*time.Millisecond
		cfg.ReadAhead = -1
	})
	defer c.Close()
	slow := mustLookup(t, c, "slow.img")
	ctx, giveUp := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	for i := range 8 { // eight readers at eight chunks: more than every slot
		readers.Add(1)
		go func() {
			defer readers.Done()
			h, err := c.Open(slow)
			if err != nil {
				t.Error(err)
				return
			}
			defer h.Close()
			if _, err := h.Read(ctx, int64(i*8)*chunk, 100); !errors.Is(err, context.Canceled) {
				t.Errorf("reader %d of the trickle: %v; want to have given up", i, err)
			}
		}()
	}
	waitFor(t, func() bool { return up.active.Load() == 2 }) // its share: half of 4
	fast := mustLookup(t, c, "fast.img")
	got := readAll(t, c, fast)
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("fast.img byte %d = %d", i, b)
		}
	}
	if n := up.active.Load(); n != 2 {
		t.Errorf("%d trickling bodies while fast.img was read, want 2 (its share)", n)
	}
	giveUp()
	readers.Wait()
	waitFor(t, func() bool { return up.active.Load() == 0 && c.Stats().FetchesInFlight.Load() == 0 })
	slow.mu.Lock()
	flights := len(slow.flights)
	slow.mu.Unlock()
	if flights != 0 {
		t.Fatalf("%d flights left on the trickling image", flights)
	}
}

// TestBackgroundFetchIsNotAbandoned: a prefetch's run that a reader
// joined and left goes on (whoever queued the image still wants it).
func TestBackgroundFetchIsNotAbandoned(t *testing.T) {
	const chunk = 64 << 10
	up := newTrickle([]upstream.Entry{{Name: "slow.img", Size: 4 * chunk}},
		map[string]bool{"slow.img": true}, 4<<10, 5*time.Millisecond)
	var log strings.Builder
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.LowSpeedLimit, cfg.abandonAfter, cfg.Logger = -1, time.Millisecond, textLogger(&log)
	})
	defer c.Close()
	img := mustLookup(t, c, "slow.img")
	if err := c.QueueImage(img); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return up.active.Load() > 0 })
	h, err := c.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	h.Read(ctx, 3*chunk, 10) // joins the prefetch's run, then gives up
	cancel()
	h.Close()
	waitFor(t, func() bool { return img.Complete() })
	if strings.Contains(log.String(), "failed") {
		t.Fatalf("the prefetch failed:\n%s", log.String())
	}
}
