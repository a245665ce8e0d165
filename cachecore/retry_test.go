package cachecore

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// statusErr is an upstream reply with a status code and maybe a
// Retry-After, as httpdir reports them.
type statusErr struct {
	code int
	ra   time.Duration
}

func (e statusErr) Error() string             { return fmt.Sprintf("%d from fake upstream", e.code) }
func (e statusErr) HTTPStatus() int           { return e.code }
func (e statusErr) RetryAfter() time.Duration { return e.ra }

func TestTemporaryFailuresAreRetried(t *testing.T) {
	up := newFake()
	data := randomBytes(256<<10, 11)
	up.Add("x.img", data, false)
	var fails atomic.Int64
	up.SetFetchErr(func(string, int64, int64) error {
		if fails.Add(1) <= 2 {
			return statusErr{code: 503}
		}
		return nil
	})
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes after retries")
	}
	if n := c.Stats().FetchRetries.Load(); n != 2 {
		t.Fatalf("FetchRetries = %d, want 2", n)
	}
	if e := img.Info().LastError; e != "" {
		t.Fatalf("a fetch that succeeded on retry left an error: %q", e)
	}
}

func TestDefinitiveFailuresAreNotRetried(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(64<<10, 12), false)
	up.SetFetchErr(func(string, int64, int64) error { return statusErr{code: 403} })
	c := openTest(t, t.TempDir(), up)
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	if _, err := h.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("err = %v, want the 403", err)
	}
	if n, r := c.Stats().FetchRetries.Load(), up.Requests(); n != 0 || r != 1 {
		t.Fatalf("retries %d, requests %d; want 0 and 1", n, r)
	}
}

func TestRetriesGiveUpAfterRetryMax(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(64<<10, 13), false)
	up.SetFetchErr(func(string, int64, int64) error { return statusErr{code: 502} })
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.RetryMax = 2 })
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	if _, err := h.ReadAt(make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("err = %v, want the 502", err)
	}
	if r := up.Requests(); r != 3 {
		t.Fatalf("requests = %d, want 3 (1 + RetryMax 2)", r)
	}
	if !strings.Contains(img.Info().LastError, "502") {
		t.Fatalf("error not recorded: %q", img.Info().LastError)
	}
}

func TestBackoff(t *testing.T) {
	for attempt := 1; attempt <= 12; attempt++ {
		d := backoff(attempt, errors.New("x"))
		hi := min(retryCap, retryBase<<min(attempt-1, 10))
		if d < hi/2 || d > hi {
			t.Errorf("attempt %d: %v outside [%v, %v]", attempt, d, hi/2, hi)
		}
	}
	if d := backoff(1, statusErr{code: 503, ra: 3 * time.Second}); d != 3*time.Second {
		t.Errorf("Retry-After 3s: pause %v", d)
	}
	if d := backoff(1, statusErr{code: 503, ra: time.Hour}); d != maxRetryAfter {
		t.Errorf("Retry-After 1h: pause %v, want the cap %v", d, maxRetryAfter)
	}
}

func TestReadOfStalledUpstreamFailsWithinReadTimeout(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(64<<10, 14), false)
	up.SetGate(make(chan struct{})) // never opened: every fetch hangs until cancelled
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.ReadTimeout = 300 * time.Millisecond })
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	start := time.Now()
	_, err := h.ReadAt(make([]byte, 10), 0)
	t.Logf("read failed after %v (read timeout 300ms): %v", time.Since(start), err)
	if !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("err = %v, want ErrReadTimeout", err)
	}
	if e := img.Info().LastError; !strings.Contains(e, "read timeout") {
		t.Fatalf("recorded error %q does not name the timeout", e)
	}
}

func TestHandleHoldsAFailureBriefly(t *testing.T) {
	up := newFake()
	data := randomBytes(128<<10, 15)
	up.Add("x.img", data, false)
	up.SetFetchErr(func(string, int64, int64) error { return statusErr{code: 404} })
	c := openTest(t, t.TempDir(), up, func(cfg *Config) { cfg.FailHold = time.Hour })
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	_, err1 := h.ReadAt(make([]byte, 10), 0)
	up.SetFetchErr(nil)
	_, err2 := h.ReadAt(make([]byte, 10), 0)
	if err1 == nil || err2 != err1 {
		t.Fatalf("second read: %v, want the held %v", err2, err1)
	}
	if r := up.Requests(); r != 1 {
		t.Fatalf("requests = %d: the held failure went to the upstream", r)
	}
	h2, _ := c.Open(img) // another open asks again
	defer h2.Close()
	b := make([]byte, len(data))
	if _, err := h2.ReadAt(b, 0); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("a new open after the failure: %v", err)
	}
	// Once the bytes are present the held failure no longer matters.
	if _, err := h.ReadAt(make([]byte, 10), 0); err != nil {
		t.Fatalf("held failure hides present bytes: %v", err)
	}
}

func TestTemporary(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{statusErr{code: 503}, true},
		{statusErr{code: 429}, true},
		{statusErr{code: 404}, false},
		{fmt.Errorf("x: %w", upstream.ErrStalled), true},
		{fmt.Errorf("x: %w", upstream.ErrShortBody), true},
		{fmt.Errorf("x: %w", upstream.ErrChanged), false},
		{upstream.ErrNotFound, false},
		{errors.New("certificate signed by unknown authority"), false},
	} {
		if got := upstream.Temporary(c.err); got != c.want {
			t.Errorf("Temporary(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestStrictReadOfStalledUpstreamFailsWithinReadTimeout(t *testing.T) {
	up := newFake()
	up.Add("x.img", randomBytes(256<<10, 16), true)
	up.SetGate(make(chan struct{})) // never opened
	c := openTest(t, t.TempDir(), up, func(cfg *Config) {
		cfg.ReadTimeout = 300 * time.Millisecond
		cfg.Verify = VerifyStrict
	})
	defer c.Close()
	img := mustLookup(t, c, "x.img")
	h, _ := c.Open(img)
	defer h.Close()
	start := time.Now()
	_, err := h.ReadAt(make([]byte, 10), 0)
	t.Logf("strict read failed after %v (read timeout 300ms): %v", time.Since(start), err)
	if !errors.Is(err, ErrReadTimeout) {
		t.Fatalf("err = %v, want ErrReadTimeout", err)
	}
	if e := img.Info().LastError; !strings.Contains(e, "read timeout") {
		t.Fatalf("recorded error %q does not name the timeout", e)
	}
}

func TestCatalogRetryPause(t *testing.T) {
	for range 100 {
		if d := catalogRetryPause(4*time.Second, errors.New("x")); d < 2*time.Second || d > 4*time.Second {
			t.Fatalf("pause %v outside [2s, 4s]", d)
		}
	}
	if d := catalogRetryPause(time.Second, statusErr{code: 429, ra: 20 * time.Second}); d != 20*time.Second {
		t.Fatalf("Retry-After 20s: pause %v", d)
	}
}
