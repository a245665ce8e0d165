package mount

import (
	"context"
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

// Image describes the image called name as it is now.
func (b *backend) Image(name string) (control.Image, error) {
	img, err := b.c.ImageNamed(name)
	if err != nil {
		return control.Image{}, err
	}
	return control.ImageOf(img.Info()), nil
}

// names is never null in JSON: an empty list is [].
func names(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func evictResult(d cachecore.Dropped) control.EvictResult {
	return control.EvictResult{Evicted: names(d.Evicted), Skipped: d.Skipped, FreedBytes: d.FreedBytes}
}

func (b *backend) Evict(name string) (control.EvictResult, error) {
	d, err := b.c.Evict(name)
	if err != nil {
		return control.EvictResult{}, err
	}
	return evictResult(d), nil
}

func (b *backend) EvictAll() (control.EvictResult, error) {
	d, err := b.c.EvictAll()
	if err != nil {
		return control.EvictResult{}, err
	}
	return evictResult(d), nil
}

func (b *backend) Pin(name string, pinned bool) (control.Image, error) {
	if err := b.c.Pin(name, pinned); err != nil {
		return control.Image{}, err
	}
	return b.Image(name)
}

func (b *backend) Queue(name string) (control.Image, error) {
	if err := b.c.Queue(name); err != nil {
		return control.Image{}, err
	}
	return b.Image(name)
}

func (b *backend) Dequeue(name string) (control.Image, error) {
	if err := b.c.Dequeue(name); err != nil {
		return control.Image{}, err
	}
	return b.Image(name)
}

func (b *backend) Queued() []string { return b.c.Queued() }

func (b *backend) Prune(ctx context.Context) (control.PruneResult, error) {
	d, err := b.c.PruneNow(ctx)
	if err != nil {
		return control.PruneResult{}, err
	}
	u := b.c.Usage()
	return control.PruneResult{Evicted: names(d.Evicted), FreedBytes: d.FreedBytes, UsageBytes: u.CacheBytes,
		LowWaterBytes: u.LowWater, MaxBytes: u.Limit}, nil
}

func (b *backend) Clean(ctx context.Context) (control.CleanResult, error) {
	d, err := b.c.CleanNow(ctx)
	if err != nil {
		return control.CleanResult{}, err
	}
	return control.CleanResult{Removed: names(d.Evicted), FreedBytes: d.FreedBytes}, nil
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

		Images:      s.Images,
		ByState:     make(map[string]int, len(s.ByState)),
		Pinned:      s.Pinned,
		QueueLength: s.Queued,
		CacheBytes:  s.Usage.CacheBytes,
		MaxBytes:    s.Usage.Limit,
		IndexBytes:  s.Usage.IndexBytes,

		Opens:           s.Opens,
		Hits:            s.Hits,
		Misses:          s.Misses,
		UpstreamBytes:   s.BytesFetched,
		ServedBytes:     s.BytesServed,
		Evictions:       s.Evictions,
		Errors:          s.FetchErrors,
		Retries:         s.FetchRetries,
		DirectReads:     s.DirectReads,
		FetchesInFlight: s.FetchesInFlight,
	}
	for state, n := range s.ByState {
		st.ByState[string(state)] = n
	}
	return st
}
