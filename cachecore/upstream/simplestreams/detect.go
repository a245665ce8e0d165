package simplestreams

import (
	"context"
	"io"
	"sync"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

// Detecting is the upstream of a plain http:// or https:// URL: a
// simplestreams server if its root serves streams/v1/index.json (Probe),
// else an HTTP directory. The first List or Fetch that gets an answer
// from the server decides, once. Nothing is decided at mount time, so a
// mount started while the server is down comes up from its index as
// always; until the server answers, requests fail as the directory's
// would, and what Remember was given waits for the upstream chosen.
type Detecting struct {
	streams *Upstream
	dir     *httpdir.Upstream // streams' own: the same root, options and credentials

	mu         sync.Mutex // protects the following; held across the one probe
	chosen     upstream.Upstream
	remembered upstream.Known
}

var (
	_ upstream.Upstream   = (*Detecting)(nil)
	_ upstream.Rememberer = (*Detecting)(nil)
	_ upstream.Retainer   = (*Detecting)(nil)
	_ upstream.Warner     = (*Detecting)(nil)
)

// Detect makes the upstream of the plain URL rawURL.
func Detect(rawURL string, opts Options) (*Detecting, error) {
	s, err := New(Prefix+rawURL, opts)
	if err != nil {
		return nil, err
	}
	return &Detecting{streams: s, dir: s.dir}, nil
}

// choice returns the upstream chosen, probing the server if none is yet.
func (d *Detecting) choice(ctx context.Context) (upstream.Upstream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.chosen != nil {
		return d.chosen, nil
	}
	isStreams, err := d.streams.probe(ctx)
	if err != nil {
		return nil, err
	}
	if isStreams {
		d.chosen = d.streams
		d.streams.log.Info("the upstream is a simplestreams server: serving its streams", "upstream", d.streams.shown)
	} else {
		d.chosen = d.dir
	}
	if r, ok := d.chosen.(upstream.Rememberer); ok && d.remembered != nil {
		r.Remember(d.remembered)
	}
	d.remembered = nil
	return d.chosen, nil
}

// Chosen is "simplestreams" or "directory" once the server has answered,
// "" before.
func (d *Detecting) Chosen() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.chosen {
	case nil:
		return ""
	case upstream.Upstream(d.streams):
		return "simplestreams"
	default:
		return "directory"
	}
}

func (d *Detecting) List(ctx context.Context) ([]upstream.Entry, error) {
	u, err := d.choice(ctx)
	if err != nil {
		return nil, err
	}
	return u.List(ctx)
}

func (d *Detecting) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	u, err := d.choice(ctx)
	if err != nil {
		return nil, err
	}
	return u.Fetch(ctx, e, off, n)
}

// URL is the same for both: the streams' files are the directory's.
func (d *Detecting) URL(name string) string { return d.dir.URL(name) }

// SetCredentials sets them on the one client both views share.
func (d *Detecting) SetCredentials(cred string) error { return d.dir.SetCredentials(cred) }

// Remember passes entries on to the upstream chosen, or keeps them until
// one is.
func (d *Detecting) Remember(known upstream.Known) {
	d.mu.Lock()
	u := d.chosen
	if u == nil {
		d.remembered = known
	}
	d.mu.Unlock()
	if r, ok := u.(upstream.Rememberer); ok {
		r.Remember(known)
	}
}

// RetainsRemoved is the chosen upstream's (upstream.Retainer); false
// before the choice.
func (d *Detecting) RetainsRemoved() bool {
	d.mu.Lock()
	r, ok := d.chosen.(upstream.Retainer)
	d.mu.Unlock()
	return ok && r.RetainsRemoved()
}

// Warnings are the chosen upstream's (upstream.Warner).
func (d *Detecting) Warnings() []string {
	d.mu.Lock()
	w, ok := d.chosen.(upstream.Warner)
	d.mu.Unlock()
	if !ok {
		return nil
	}
	return w.Warnings()
}
