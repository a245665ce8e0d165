package cachecore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Bounded failure. A range fetch that fails for a reason worth another try
// (upstream.Temporary: 5xx, a reset, a timeout or stall, a short body) is
// retried up to RetryMax times with exponential backoff and jitter, or
// after the pause the upstream asked for (Retry-After, capped). A reader
// waits at most ReadTimeout for its bytes, whatever the fetch is doing, and
// then gets an error (EIO) that is also recorded on the image. A handle
// whose read failed answers further reads of missing bytes with the same
// error for FailHold, so a reader that retries at once does not hammer an
// upstream that has just failed.

// Defaults of the Config fields below.
const (
	DefaultRetryMax    = 4
	DefaultReadTimeout = 30 * time.Second
	DefaultFailHold    = 2 * time.Second

	retryBase     = 250 * time.Millisecond // first pause
	retryCap      = 8 * time.Second        // longest backoff pause
	maxRetryAfter = 30 * time.Second       // longest Retry-After honoured
)

// ErrReadTimeout: the bytes a read needs did not arrive within ReadTimeout.
var ErrReadTimeout = errors.New("upstream did not deliver in time")

// FailureConfig is the part of Config about failing well.
type FailureConfig struct {
	RetryMax    int           // retries of a failed range request; 0: default, <0: none
	ReadTimeout time.Duration // longest a read waits for the upstream; 0: default
	FailHold    time.Duration // how long a handle repeats a failure; 0: default, <0: never
	// A range request delivering fewer than LowSpeedLimit bytes a second
	// over LowSpeedTime of waiting on the upstream is cancelled
	// (request.go); 0: defaults, LowSpeedLimit < 0: no limit.
	LowSpeedLimit int64
	LowSpeedTime  time.Duration
	// SpaceReserve is the free space on the cache filesystem that data
	// never takes, for the index (store/freespace.go); 0: default, <0: none.
	SpaceReserve int64
}

func (f *FailureConfig) fill() {
	if f.RetryMax == 0 {
		f.RetryMax = DefaultRetryMax
	}
	if f.ReadTimeout <= 0 {
		f.ReadTimeout = DefaultReadTimeout
	}
	if f.FailHold == 0 {
		f.FailHold = DefaultFailHold
	}
	if f.LowSpeedLimit == 0 {
		f.LowSpeedLimit = DefaultLowSpeedLimit
	}
	if f.LowSpeedTime <= 0 {
		f.LowSpeedTime = DefaultLowSpeedTime
	}
	if f.SpaceReserve == 0 {
		f.SpaceReserve = DefaultSpaceReserve
	}
}

// backoff is the pause before retry number attempt (1, 2, ...) after err:
// base * 2^(attempt-1), capped, with the upper half jittered so that
// readers failing together do not come back together; at least what a
// Retry-After asked for (capped).
func backoff(attempt int, err error) time.Duration {
	d := retryCap
	if attempt < 10 {
		d = min(retryCap, retryBase<<(attempt-1))
	}
	d = d/2 + rand.N(d/2+1)
	if ra := min(upstream.RetryAfterOf(err), maxRetryAfter); ra > d {
		d = ra
	}
	return d
}

// retryWorthy says whether a fetch that failed with err should try again
// (attempt is the number of this retry, from 1).
func (c *Cache) retryWorthy(attempt int, err error) bool {
	return attempt <= c.cfg.RetryMax && upstream.Temporary(err)
}

// pauseBeforeRetry sleeps the backoff before a retry; it gives up (false)
// at once when ctx (the run's) ends.
func (c *Cache) pauseBeforeRetry(ctx context.Context, img *Image, attempt int, err error) bool {
	d := backoff(attempt, err)
	c.log.Debug("fetch failed; retrying", "image", img.entry.Name, "attempt", attempt, "in", d, "err", err)
	c.stats.FetchRetries.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ensureBounded is ensure for a reader: it gives up after ReadTimeout
// (recording why on the image), and repeats a recent failure of this
// handle instead of asking the upstream again.
func (h *Handle) ensureBounded(ctx context.Context, first, last int) error {
	img := h.img
	img.mu.Lock()
	present := img.present.NextMissing(first, last+1) > last
	img.mu.Unlock()
	if present { // the warm path (ensure counts the hit): no timer, no held failure
		return img.ensure(ctx, first, last)
	}
	if err := h.heldFailure(first, last); err != nil {
		return err
	}
	timeout := img.c.cfg.ReadTimeout
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrReadTimeout)
	defer cancel()
	return h.boundedResult(ctx, tctx, img.ensure(tctx, first, last), "no bytes within the read timeout")
}

// boundedResult finishes a bounded wait that ended with err: a timeout
// (the cause of bctx) becomes an error naming the bound, recorded on the
// image; a failure is held on the handle. A reader that gave up (ctx) gets
// its own error back untouched.
func (h *Handle) boundedResult(ctx, bctx context.Context, err error, what string) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	img := h.img
	if errors.Is(context.Cause(bctx), ErrReadTimeout) {
		err = &Error{Op: "read", Name: img.entry.Name,
			Err: fmt.Errorf("%w: %s of %v", ErrReadTimeout, what, img.c.cfg.ReadTimeout)}
		img.mu.Lock()
		img.recordErrorLocked(err)
		img.mu.Unlock()
	}
	if !errors.Is(err, ErrClosed) {
		h.holdFailure(err)
	}
	return err
}

// heldFailure is the failure this handle repeats, if it is recent and
// chunks [first, last] are not all present.
func (h *Handle) heldFailure(first, last int) error {
	h.mu.Lock()
	err, until := h.held, h.heldUntil
	h.mu.Unlock()
	if err == nil || !time.Now().Before(until) {
		return nil
	}
	img := h.img
	img.mu.Lock()
	missing := img.present.NextMissing(first, last+1) <= last
	img.mu.Unlock()
	if !missing {
		return nil
	}
	return err
}

func (h *Handle) holdFailure(err error) {
	hold := h.img.c.cfg.FailHold
	if hold <= 0 {
		return
	}
	h.mu.Lock()
	h.held, h.heldUntil = err, time.Now().Add(hold)
	h.mu.Unlock()
}

// awaitVerifiedBounded is awaitVerified (strict mode: the whole image
// before any byte) for a reader: it gives up when no chunk has arrived
// for ReadTimeout while the image is incomplete. A strict read of a large
// image may take long, but not without progress.
func (h *Handle) awaitVerifiedBounded(ctx context.Context) error {
	img := h.img
	if err := h.heldFailure(0, img.nChunks-1); err != nil {
		return err
	}
	timeout := img.c.cfg.ReadTimeout
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(max(timeout/8, time.Millisecond))
		defer tick.Stop()
		last, lastAt := -1, time.Now()
		for {
			select {
			case <-done:
				return
			case <-wctx.Done():
				return
			case now := <-tick.C:
				img.mu.Lock()
				count, complete := img.present.Count(), img.present.Complete()
				img.mu.Unlock()
				if complete || count != last {
					last, lastAt = count, now
					continue
				}
				if now.Sub(lastAt) >= timeout {
					cancel(ErrReadTimeout)
					return
				}
			}
		}
	}()
	return h.boundedResult(ctx, wctx, img.awaitVerified(wctx), "no bytes for the read timeout")
}

// readAroundBounded is readDirect (a read served straight from the
// upstream when the cache has no room) within ReadTimeout: waiting for a
// fetch slot that stalled fetches hold counts too.
func (h *Handle) readAroundBounded(ctx context.Context, off int64, n int) (Span, error) {
	img := h.img
	timeout := img.c.cfg.ReadTimeout
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrReadTimeout)
	defer cancel()
	sp, err := img.c.readDirect(tctx, img, off, n)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), ErrReadTimeout) {
		err = &Error{Op: "read", Name: img.entry.Name,
			Err: fmt.Errorf("%w: no bytes within the read timeout of %v", ErrReadTimeout, timeout)}
	}
	return sp, err
}

// catalogRetryPause is the pause before the next catalog refresh after a
// failed one: the backoff step, its upper half jittered (mounts that lost
// one upstream together do not come back together), at least what a
// Retry-After asked for (capped).
func catalogRetryPause(step time.Duration, err error) time.Duration {
	d := step/2 + rand.N(step/2+1)
	return max(d, min(upstream.RetryAfterOf(err), maxRetryAfter))
}
