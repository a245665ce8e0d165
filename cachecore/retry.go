package cachecore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Bounded failure. A range fetch that fails for a reason worth another try
// (upstream.Temporary: 5xx, a reset, a timeout or stall, a short body) is
// retried up to RetryMax times with exponential backoff and jitter, or
// after the pause the upstream asked for (Retry-After, capped). The
// deadlines of readers (ReadTimeout, FailHold) are the handle's
// (handle.go); FailureConfig configures both.

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

// catalogRetryPause is the pause before the next catalog refresh after a
// failed one: the backoff step, its upper half jittered (mounts that lost
// one upstream together do not come back together), at least what a
// Retry-After asked for (capped).
func catalogRetryPause(step time.Duration, err error) time.Duration {
	d := step/2 + rand.N(step/2+1)
	return max(d, min(upstream.RetryAfterOf(err), maxRetryAfter))
}
