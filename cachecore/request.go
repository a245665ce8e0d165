package cachecore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Slow and unwanted fetches. A range request must not hold its fetch
// slot for ever: a server that sends a byte a second never trips a stall
// timeout, and a fetch has no deadline of its own (a large run on a slow
// but honest link may take long). Two rules free the slot:
//
//   - The low-speed limit (curl's --speed-limit/--speed-time): a request
//     that delivers fewer than LowSpeedLimit bytes a second over
//     LowSpeedTime spent waiting on the upstream is cancelled with
//     ErrTooSlow, and retried like a stall. Time spent writing to disk or
//     waiting for room does not count.
//   - Abandonment: a run that readers asked for (not read-ahead or
//     prefetch, which are wanted by whoever started them) is cancelled
//     when its last waiting reader gave up and none came back within
//     5 s.

// Defaults of the low-speed limit.
const (
	DefaultLowSpeedLimit = 1 << 10 // bytes a second
	DefaultLowSpeedTime  = 30 * time.Second
)

// defaultAbandonAfter is how long a run nobody waits for goes on: a
// reader that was interrupted or timed out and asks again at once finds
// it still running.
const defaultAbandonAfter = 5 * time.Second

// ErrTooSlow: a range request delivered less than the low-speed limit. It
// counts as a stall (upstream.ErrStalled): worth a retry.
var ErrTooSlow = errors.New("upstream too slow")

// errAbandoned: no reader waits for a run any more. Nobody sees it but a
// reader that came back just as the run was given up, which asks again.
var errAbandoned = errors.New("no reader waits for the fetch any more")

// request is what a run's flights share: the context its range requests
// run on, and who waits for them.
type request struct {
	// read only
	ctx          context.Context // ends when the run is abandoned or the cache closes
	cancel       context.CancelCauseFunc
	abandonAfter time.Duration

	mu         sync.Mutex  // protects the following
	background bool        // read-ahead, prefetch or an image's stream: never abandoned
	waiters    int         // readers waiting for a flight of the run
	idle       *time.Timer // abandons the run, armed while waiters == 0
	ended      bool
}

func (c *Cache) newRequest(background bool) *request {
	ctx, cancel := context.WithCancelCause(c.ctx)
	return &request{ctx: ctx, cancel: cancel, background: background, abandonAfter: c.cfg.abandonAfter}
}

// join counts a reader that waits for the run.
func (q *request) join() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waiters++
	if q.idle != nil {
		q.idle.Stop()
	}
}

// leave counts a reader that stopped waiting (served, failed, or gave
// up); the last to leave a foreground run arms its abandonment.
func (q *request) leave() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waiters--
	if q.waiters > 0 || q.background || q.ended {
		return
	}
	if q.idle == nil {
		q.idle = time.AfterFunc(q.abandonAfter, q.abandonIfIdle)
	} else {
		q.idle.Reset(q.abandonAfter)
	}
}

// keep makes the run one that is never abandoned (it became its image's
// stream: what it brings was asked for by others too).
func (q *request) keep() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.background = true
	if q.idle != nil {
		q.idle.Stop()
	}
}

func (q *request) abandonIfIdle() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiters == 0 && !q.ended {
		q.cancel(errAbandoned)
	}
}

// end releases the request's context once its run is over.
func (q *request) end() {
	q.mu.Lock()
	q.ended = true
	if q.idle != nil {
		q.idle.Stop()
	}
	q.mu.Unlock()
	q.cancel(nil)
}

// joinAll counts a reader as waiting for the runs of flights (each run
// once: a run's flights are adjacent) and returns what to leave later.
func joinAll(flights []*flight) []*request {
	var reqs []*request
	for _, f := range flights {
		if n := len(reqs); n == 0 || reqs[n-1] != f.req {
			f.req.join()
			reqs = append(reqs, f.req)
		}
	}
	return reqs
}

func leaveAll(reqs []*request) {
	for _, q := range reqs {
		q.leave()
	}
}

// reply is the reply to one range request, its body read through the
// low-speed limit (in).
type reply struct {
	body   io.ReadCloser
	in     io.Reader
	sp     upstream.Splicer // body, if it can be spliced into a file
	ctx    context.Context
	cancel context.CancelCauseFunc
	guard  *rateGuard
}

func (rep *reply) Read(p []byte) (int, error) { return rep.in.Read(p) }

// spliceTo moves n bytes of the reply into f at off (rep.sp must be set),
// through the low-speed limit like a Read.
func (rep *reply) spliceTo(f *os.File, off, n int64, write func(func() error) error) (int64, error) {
	rep.guard.begin()
	k, err := rep.sp.SpliceTo(f, off, n, write)
	rep.guard.end(int(k))
	return k, err
}

// openReply makes one range request for [off, off+n) of img, guarded by
// the low-speed limit.
func (c *Cache) openReply(ctx context.Context, img *Image, off, n int64) (*reply, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	rep := &reply{ctx: ctx, cancel: cancel, guard: c.newRateGuard(cancel)}
	rep.guard.begin()
	body, err := c.up.Fetch(ctx, img.fetchEntry(), off, n)
	rep.guard.end(0)
	if err != nil {
		return nil, rep.close(err)
	}
	rep.body, rep.in, rep.sp = body, body, upstream.SplicerOf(body)
	if rep.guard != nil {
		rep.in = guardedBody{r: body, g: rep.guard}
	}
	return rep, nil
}

// close ends the request. It returns err, or, if the low-speed limit
// cancelled the request, why (the upstream's error says only
// "canceled").
func (rep *reply) close(err error) error {
	if rep.body != nil {
		rep.body.Close()
	}
	rep.guard.stop()
	if cause := context.Cause(rep.ctx); err != nil && errors.Is(cause, ErrTooSlow) && !errors.Is(err, ErrTooSlow) {
		err = cause
	}
	rep.cancel(nil)
	return err
}

// tooSlowError says how slow a cancelled request was.
type tooSlowError struct {
	got   int64
	spent time.Duration
	limit int64
}

func (e *tooSlowError) Error() string {
	return fmt.Sprintf("%v: %d bytes in %v, under the low-speed limit of %d bytes/s",
		ErrTooSlow, e.got, e.spent.Round(time.Millisecond), e.limit)
}

func (e *tooSlowError) Is(target error) bool {
	return target == ErrTooSlow || target == upstream.ErrStalled
}

// rateGuard enforces the low-speed limit on one range request: over each
// window of LowSpeedTime spent waiting on the upstream (in Fetch and in the
// body's Read), at least limit bytes a second must come, else it cancels
// the request. A timer catches a wait that never returns.
type rateGuard struct {
	// read only
	limit  int64
	window time.Duration
	cancel context.CancelCauseFunc

	mu    sync.Mutex    // protects the following
	spent time.Duration // waiting in this window, waits that ended
	got   int64         // bytes in this window
	since time.Time     // start of the wait in progress; zero if none
	timer *time.Timer
	done  bool
}

// newRateGuard guards the request of ctx; nil (no guard) if the limit is
// off.
func (c *Cache) newRateGuard(cancel context.CancelCauseFunc) *rateGuard {
	if c.cfg.LowSpeedLimit < 0 {
		return nil
	}
	return &rateGuard{limit: c.cfg.LowSpeedLimit, window: c.cfg.LowSpeedTime, cancel: cancel}
}

// begin starts a wait on the upstream.
func (g *rateGuard) begin() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.since = time.Now()
	if g.timer == nil {
		g.timer = time.AfterFunc(g.window-g.spent, g.check)
	} else {
		g.timer.Reset(g.window - g.spent)
	}
}

// end ends a wait that brought n bytes.
func (g *rateGuard) end(n int) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.timer.Stop()
	g.spent += time.Since(g.since)
	g.since = time.Time{}
	g.got += int64(n)
	g.judgeLocked()
}

// check runs when a wait reached the end of the window.
func (g *rateGuard) check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.since.IsZero() || g.done {
		return
	}
	now := time.Now()
	g.spent += now.Sub(g.since)
	g.since = now
	if g.judgeLocked() {
		g.timer.Reset(g.window - g.spent)
	}
}

// judgeLocked ends a window that is over: too few bytes cancel the
// request, enough start the next window. It reports whether the request
// goes on.
func (g *rateGuard) judgeLocked() bool {
	if g.done {
		return false
	}
	if g.spent < g.window {
		return true
	}
	if float64(g.got) < float64(g.limit)*g.spent.Seconds() {
		g.done = true
		g.cancel(&tooSlowError{got: g.got, spent: g.spent, limit: g.limit})
		return false
	}
	g.spent, g.got = 0, 0
	return true
}

// stop ends the guard when its request is over.
func (g *rateGuard) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// guardedBody counts a body's Reads as waits on the upstream.
type guardedBody struct {
	r io.Reader
	g *rateGuard
}

func (b guardedBody) Read(p []byte) (int, error) {
	b.g.begin()
	n, err := b.r.Read(p)
	b.g.end(n)
	return n, err
}
