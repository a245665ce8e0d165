package simplestreams

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Probe reports whether the plain http or https URL rawURL is the root of
// a simplestreams tree: whether it serves streams/v1/index.json of
// format index:1.0. A mount calls it to pick this upstream for a URL
// given without "simplestreams+". Not found, or a file that is not such
// an index, is false without an error; an error is an answer it could
// not get (the server down, TLS refused), which says nothing either way.
//
// It costs a request, so a mount that must start offline should keep
// what it found rather than probe again.
func Probe(ctx context.Context, rawURL string, opts Options) (bool, error) {
	u, err := New(rawURL, opts)
	if err != nil {
		return false, err
	}
	return u.probe(ctx)
}

func (u *Upstream) probe(ctx context.Context) (bool, error) {
	f, err := u.dir.Get(ctx, IndexPath, u.opts.MaxIndexBytes, nil)
	if errors.Is(err, upstream.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var idx struct {
		Format string `json:"format"`
	}
	return json.Unmarshal(f.Data, &idx) == nil && idx.Format == indexFormat, nil
}
