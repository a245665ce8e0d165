package mount

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/control"
)

// backend adapts the cache to the control API.
type backend struct {
	c          *cachecore.Cache
	mountpoint string
	cacheDir   string
	started    time.Time
}

var _ control.Backend = (*backend)(nil)

func newBackend(c *cachecore.Cache, mountpoint, cacheDir string) *backend {
	return &backend{c: c, mountpoint: mountpoint, cacheDir: cacheDir, started: time.Now()}
}

func (b *backend) Images() []control.Image {
	infos := b.c.Images()
	imgs := make([]control.Image, len(infos))
	for i, info := range infos {
		imgs[i] = control.ImageOf(info)
	}
	return imgs
}

func (b *backend) Image(name string) (control.Image, error) {
	img, err := b.c.ImageNamed(name)
	if err != nil {
		return control.Image{}, err
	}
	return control.ImageOf(img.Info()), nil
}

func notYet(op string) error { return fmt.Errorf("%s: %w", op, control.ErrNotSupported) }

func (b *backend) Evict(name string) (control.EvictResult, error) {
	return control.EvictResult{}, notYet("evict")
}

func (b *backend) EvictAll() (control.EvictResult, error) {
	return control.EvictResult{}, notYet("evict")
}

func (b *backend) Pin(name string, pinned bool) (control.Image, error) {
	return control.Image{}, notYet("pin")
}

func (b *backend) Queue(name string) (control.Image, error) {
	return control.Image{}, notYet("prefetch")
}

func (b *backend) Dequeue(name string) (control.Image, error) {
	return control.Image{}, notYet("prefetch")
}

func (b *backend) Queued() []string { return nil }

func (b *backend) Prune() (control.PruneResult, error) {
	return control.PruneResult{}, notYet("prune")
}

func (b *backend) Clean() (control.CleanResult, error) {
	return control.CleanResult{}, notYet("clean")
}

func (b *backend) Verify(ctx context.Context, name string) (control.VerifyResult, error) {
	r, err := b.c.Check(ctx, name)
	if err != nil && len(r.Reports) == 0 {
		return control.VerifyResult{}, err
	}
	return control.VerifyResultOf(r), nil // cut short: what was found so far
}

func (b *backend) Stats() control.Stats {
	s := b.c.Snapshot()
	st := control.Stats{
		Source:     b.c.Source(),
		Mountpoint: b.mountpoint,
		CacheDir:   b.cacheDir,
		PID:        os.Getpid(),
		Started:    b.started,
		ServeMode:  string(b.c.ServeMode()),

		Images:     s.Images,
		ByState:    make(map[string]int, len(s.ByState)),
		CacheBytes: s.CachedBytes,
		IndexBytes: s.IndexBytes,

		Opens:           s.Opens,
		Hits:            s.Hits,
		Misses:          s.Misses,
		UpstreamBytes:   s.BytesFetched,
		ServedBytes:     s.BytesServed,
		Evictions:       s.Evictions,
		Errors:          s.FetchErrors,
		Retries:         s.FetchRetries,
		FetchesInFlight: s.FetchesInFlight,
	}
	for state, n := range s.ByState {
		st.ByState[string(state)] = n
	}
	return st
}
