package mount

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/control"
	"github.com/imgcache/imgcache/fs"
)

// This file is the one place where the engine meets the control API:
// backend adapts the cache to control.Backend, converting the engine's
// types to the API's and marking the engine's errors with the API's
// kinds.

// backend adapts the cache to the control API.
type backend struct {
	c          *cachecore.Cache
	root       *fs.Root // how it serves settled images
	mountpoint string
	cacheDir   string
	started    time.Time
}

var _ control.Backend = (*backend)(nil)

func newBackend(c *cachecore.Cache, root *fs.Root, mountpoint, cacheDir string) *backend {
	return &backend{c: c, root: root, mountpoint: mountpoint, cacheDir: cacheDir, started: time.Now()}
}

// apiError marks err with the API's kind for it; its message stays.
func apiError(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, upstream.ErrUnsafeName):
		kind = control.ErrBadName
	case errors.Is(err, cachecore.ErrNotFound), errors.Is(err, cachecore.ErrNoPin):
		kind = control.ErrNotFound
	case errors.Is(err, cachecore.ErrBadPin):
		kind = control.ErrBadName
	case errors.Is(err, cachecore.ErrBusy), errors.Is(err, cachecore.ErrPinned):
		kind = control.ErrConflict
	case errors.Is(err, cachecore.ErrNoRoom):
		kind = control.ErrNoRoom
	case errors.Is(err, cachecore.ErrClosed):
		kind = control.ErrNotMounted
	default:
		return err
	}
	return control.WithKind(err, kind)
}

// CheckName takes a name only if the catalog could hold it as it is:
// upstream.CleanName accepts it and leaves it unchanged.
func (b *backend) CheckName(name string) error {
	clean, err := upstream.CleanName(name)
	if err == nil && clean != name {
		err = fmt.Errorf("%w %q: its clean form is %q", upstream.ErrUnsafeName, name, clean)
	}
	return err
}

func (b *backend) Images(prefix string) iter.Seq[control.Image] {
	return func(yield func(control.Image) bool) {
		for info := range b.c.Images(prefix) {
			if !yield(ImageOf(info)) {
				return
			}
		}
	}
}

// Image describes the image called name as it is now.
func (b *backend) Image(name string) (control.Image, error) {
	img, err := b.c.ImageNamed(name)
	if err != nil {
		return control.Image{}, apiError(err)
	}
	return ImageOf(img.Info()), nil
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
		return control.EvictResult{}, apiError(err)
	}
	return evictResult(d), nil
}

func (b *backend) EvictAll() (control.EvictResult, error) {
	d, err := b.c.EvictAll()
	if err != nil {
		return control.EvictResult{}, apiError(err)
	}
	return evictResult(d), nil
}

func (b *backend) Pin(name string, pinned bool) (control.Image, error) {
	if err := b.c.Pin(name, pinned); err != nil {
		return control.Image{}, apiError(err)
	}
	img, err := b.Image(name)
	if err != nil && !pinned { // the pin of a name no longer listed is gone too
		return control.Image{Name: name}, nil
	}
	return img, err
}

func pinOf(p cachecore.PinInfo) control.Pin {
	return control.Pin{Kind: string(p.Kind), Pattern: p.Pattern, Added: p.Added, Images: names(p.Images)}
}

func (b *backend) Pins() []control.Pin {
	infos := b.c.Pins()
	pins := make([]control.Pin, len(infos))
	for i, p := range infos {
		pins[i] = pinOf(p)
	}
	return pins
}

func (b *backend) AddPin(kind, pattern string) (control.Pin, error) {
	p, err := b.c.AddPin(cachecore.PinRule{Kind: cachecore.PinKind(kind), Pattern: pattern})
	return pinOf(p), apiError(err)
}

func (b *backend) RemovePin(kind, pattern string) (control.Pin, error) {
	p, err := b.c.RemovePin(cachecore.PinRule{Kind: cachecore.PinKind(kind), Pattern: pattern})
	return pinOf(p), apiError(err)
}

func (b *backend) Queue(name string) (control.Image, error) {
	if err := b.c.Queue(name); err != nil {
		return control.Image{}, apiError(err)
	}
	return b.Image(name)
}

func (b *backend) Dequeue(name string) (control.Image, error) {
	if err := b.c.Dequeue(name); err != nil {
		return control.Image{}, apiError(err)
	}
	return b.Image(name)
}

func (b *backend) Queued() []string { return b.c.Queued() }

func (b *backend) Prune(ctx context.Context) (control.PruneResult, error) {
	d, err := b.c.PruneNow(ctx)
	if err != nil {
		return control.PruneResult{}, apiError(err)
	}
	u := b.c.Usage()
	return control.PruneResult{Evicted: names(d.Evicted), FreedBytes: d.FreedBytes, UsageBytes: u.CacheBytes,
		LowWaterBytes: u.LowWater, MaxBytes: u.Limit}, nil
}

func (b *backend) Clean(ctx context.Context) (control.CleanResult, error) {
	d, err := b.c.CleanNow(ctx)
	if err != nil {
		return control.CleanResult{}, apiError(err)
	}
	return control.CleanResult{Removed: names(d.Evicted), FreedBytes: d.FreedBytes}, nil
}

func (b *backend) Verify(ctx context.Context, name string) (control.VerifyResult, error) {
	r, err := b.c.Check(ctx, name)
	if err != nil && len(r.Reports) == 0 {
		return control.VerifyResult{}, apiError(err)
	}
	return verifyResultOf(r), nil // cut short: what was found so far
}

func (b *backend) Stats() control.Stats {
	s := b.c.Snapshot()
	st := control.Stats{
		Source:     b.c.Source(),
		Mountpoint: b.mountpoint,
		CacheDir:   b.cacheDir,
		PID:        os.Getpid(),
		Started:    b.started,
		ServeMode:  string(b.root.ServeMode()),

		Images:      s.Images,
		ImagesCold:  s.Cold,
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

// ImageOf describes an image of the cache in the API's terms.
func ImageOf(i cachecore.Info) control.Image {
	return control.Image{
		Name:        i.Name,
		Size:        i.Size,
		CachedBytes: i.CachedBytes,
		State:       string(i.State),
		Hits:        i.Hits,
		LastAccess:  i.LastAccess,
		Digest:      i.Digest,
		ModTime:     i.ModTime,
		Source:      i.Source,
		Error:       i.LastError,
		ErrorAt:     i.LastErrorAt,
		Pinned:      i.Pinned,
		Queued:      i.Queued,
		Attrs:       i.Attrs,
		Retired:     i.Retired,
	}
}

// verifyResultOf describes a cache check in the API's terms.
func verifyResultOf(r cachecore.CheckResult) control.VerifyResult {
	v := control.VerifyResult{Images: r.Images, Chunks: r.Chunks, Bytes: r.Bytes, BadChunks: r.BadChunks,
		Invalid: r.Invalid, Reports: make([]control.VerifyReport, len(r.Reports))}
	for i, ir := range r.Reports {
		v.Reports[i] = control.VerifyReport{Name: ir.Name, State: string(ir.State), Chunks: ir.Chunks,
			BadChunks: ir.BadChunks, Message: ir.Message}
	}
	return v
}
