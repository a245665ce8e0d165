// Package failover makes one upstream of several that serve the same
// images (mirrors), tried in order.
//
// Requests go to the active upstream, at first the first one. When it
// fails (an error, or a body that breaks off), the next ones are tried in
// order and the first that answers becomes active. Once the first
// upstream has been out of use for ProbeAfter, it is tried first again,
// so the mount goes back to it when it recovers.
//
// The first upstream is the mount's identity: URL reports it, so image IDs
// (which include the URL when no digest is published) do not change with
// failover. Mirrors should serve the same versions (the same validators,
// or published digests); a mirror with another version of an image
// answers with upstream.ErrChanged, never with its bytes.
package failover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// DefaultProbeAfter is how long the first upstream stays out of use after
// it failed before it is tried first again.
const DefaultProbeAfter = 30 * time.Second

// Upstream tries several upstreams in order.
type Upstream struct {
	// read only
	ups        []upstream.Upstream
	log        *slog.Logger
	probeAfter time.Duration
	now        func() time.Time

	mu       sync.Mutex // protects the following
	active   int
	leftAt   time.Time // when the first upstream stopped being active
	failures []int     // failures of each upstream, for Status
}

var (
	_ upstream.Upstream   = (*Upstream)(nil)
	_ upstream.Rememberer = (*Upstream)(nil)
	_ upstream.Retainer   = (*Upstream)(nil)
	_ upstream.Warner     = (*Upstream)(nil)
)

// New returns an upstream that tries ups in order; probeAfter <= 0 means
// DefaultProbeAfter, log nil discards.
func New(ups []upstream.Upstream, probeAfter time.Duration, log *slog.Logger) *Upstream {
	if len(ups) == 0 {
		panic("failover.New: no upstream")
	}
	if probeAfter <= 0 {
		probeAfter = DefaultProbeAfter
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Upstream{ups: ups, log: log, probeAfter: probeAfter, now: time.Now, failures: make([]int, len(ups))}
}

// URL is the first upstream's: the mount's identity.
func (f *Upstream) URL(name string) string { return f.ups[0].URL(name) }

// Active is the URL of the upstream now in use.
func (f *Upstream) Active() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ups[f.active].URL("")
}

// order is the order to try the upstreams in: the active one, then the
// others from the first; the first one first again once it has been out
// of use for probeAfter.
func (f *Upstream) order() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	first := f.active
	if first != 0 && f.now().Sub(f.leftAt) >= f.probeAfter {
		first = 0
	}
	order := []int{first}
	for i := range f.ups {
		if i != first {
			order = append(order, i)
		}
	}
	return order
}

// succeeded makes upstream i the active one.
func (f *Upstream) succeeded(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i == f.active {
		return
	}
	if i == 0 {
		f.log.Info("first upstream answers again; using it", "upstream", f.ups[0].URL(""))
	} else {
		f.log.Warn("failing over", "from", f.ups[f.active].URL(""), "to", f.ups[i].URL(""))
		if f.active == 0 {
			f.leftAt = f.now()
		}
	}
	f.active = i
}

// failed notes that upstream i failed; if it is the active one, the next
// request starts with the next upstream.
func (f *Upstream) failed(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[i]++
	f.log.Debug("upstream failed", "upstream", f.ups[i].URL(""), "err", err)
	if i == 0 {
		f.leftAt = f.now() // a failed probe too: the next one is ProbeAfter away
	}
	if i == f.active && len(f.ups) > 1 {
		f.active = (i + 1) % len(f.ups)
	}
}

// Remember passes the entries the cache holds on to every upstream that
// can use them.
func (f *Upstream) Remember(known upstream.Known) {
	for _, u := range f.ups {
		if r, ok := u.(upstream.Rememberer); ok {
			r.Remember(known)
		}
	}
}

// RetainsRemoved is the first upstream's (upstream.Retainer): mirrors of
// one protocol answer alike.
func (f *Upstream) RetainsRemoved() bool {
	r, ok := f.ups[0].(upstream.Retainer)
	return ok && r.RetainsRemoved()
}

// Warnings are the active upstream's (upstream.Warner): the one the last
// List used.
func (f *Upstream) Warnings() []string {
	f.mu.Lock()
	u := f.ups[f.active]
	f.mu.Unlock()
	if w, ok := u.(upstream.Warner); ok {
		return w.Warnings()
	}
	return nil
}

// List lists the first upstream in order that answers.
func (f *Upstream) List(ctx context.Context) ([]upstream.Entry, error) {
	var errs []error
	for _, i := range f.order() {
		es, err := f.ups[i].List(ctx)
		if err == nil {
			f.succeeded(i)
			return es, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		f.failed(i, err)
		errs = append(errs, err)
	}
	return nil, joinErrors(errs)
}

// Fetch fetches from the first upstream in order that answers. A body
// that breaks off counts as a failure of its upstream, so that the retry
// goes elsewhere.
func (f *Upstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	var errs []error
	for _, i := range f.order() {
		rc, err := f.ups[i].Fetch(ctx, e, off, n)
		if err == nil {
			f.succeeded(i)
			return &watchedBody{ReadCloser: rc, fail: func(err error) { f.failed(i, err) }}, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		f.failed(i, err)
		errs = append(errs, err)
	}
	return nil, joinErrors(errs)
}

// joinErrors keeps the error of the last upstream tried first in line
// (errors.Is and As see them all), so that one-line messages start with
// something useful.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// watchedBody reports the first error of a body other than its end.
type watchedBody struct {
	io.ReadCloser
	once sync.Once
	fail func(error)
}

// ReadWhole passes on the body's (upstream.WholeReader).
func (b *watchedBody) ReadWhole() bool { return upstream.ReadWhole(b.ReadCloser) }

// CanSplice and SpliceTo pass on the body's (upstream.Splicer).
func (b *watchedBody) CanSplice() bool { return upstream.SplicerOf(b.ReadCloser) != nil }

func (b *watchedBody) SpliceTo(f *os.File, off, n int64, write func(func() error) error) (int64, error) {
	k, err := b.ReadCloser.(upstream.Splicer).SpliceTo(f, off, n, write)
	if err != nil && !errors.Is(err, context.Canceled) {
		b.once.Do(func() { b.fail(err) })
	}
	return k, err
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) {
		b.once.Do(func() { b.fail(err) })
	}
	return n, err
}
