// Package control is the daemon's management API: an HTTP server on a unix
// socket in the cache directory (control.sock, mode 0600) and the client
// the imgcache CLI uses to talk to it. The routes mirror OpenStack Glance's
// cache-manage API (list cached images, delete one or all, list, add and
// remove queued images) plus pins, prune, clean, verify, stats and
// Prometheus metrics; docs/api.md describes them.
//
// The server depends on Backend, an interface in the terms of the API's
// own wire types and error kinds, not on the cache engine: package mount
// adapts the cache to it (converting its types and marking its errors),
// and the tests use a fake. The package imports nothing else of
// imgcache's.
package control

import (
	"context"
	"iter"
	"time"
)

// SocketName is the control socket's name in the cache directory.
const SocketName = "control.sock"

// Backend is what the server needs from the cache. Names are catalog
// paths ("ubuntu/jammy.img"). Errors are marked with WithKind
// (ErrNotFound, ErrConflict, ...); an error of no kind is answered 500.
type Backend interface {
	// CheckName says why name could not be the name of an image or
	// directory of the catalog, as it is, or nil. A route about one name
	// asks it first and answers 400 with its message, rather than ask
	// the cache about a path like "../x".
	CheckName(name string) error
	// Images yields the images of the catalog whose names start with
	// prefix, in name order, as it goes: a listing is streamed, never
	// held whole.
	Images(prefix string) iter.Seq[Image]
	Image(name string) (Image, error)
	Evict(name string) (EvictResult, error)
	EvictAll() (EvictResult, error)
	Pin(name string, pinned bool) (Image, error) // a pin of the name
	Pins() []Pin
	AddPin(kind, pattern string) (Pin, error) // kind: PinName, PinGlob or PinAlias
	RemovePin(kind, pattern string) (Pin, error)
	Queue(name string) (Image, error)
	Dequeue(name string) (Image, error)
	Queued() []string
	Prune(ctx context.Context) (PruneResult, error)
	Clean(ctx context.Context) (CleanResult, error)
	Verify(ctx context.Context, name string) (VerifyResult, error) // "": every image; a directory: the images below it
	Stats() Stats
}

// Image is one image of the catalog and its cache state.
type Image struct {
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	CachedBytes int64     `json:"cached_bytes"`
	State       string    `json:"state"` // absent, partial, complete, verified, invalid
	Hits        uint64    `json:"hits"`  // opens for reading, over the image's life in the cache
	LastAccess  time.Time `json:"last_access,omitzero"`
	Pinned      bool      `json:"pinned"`
	Queued      bool      `json:"queued"`
	Digest      string    `json:"digest,omitempty"`
	ModTime     time.Time `json:"mtime,omitzero"`
	Source      string    `json:"source,omitempty"`
	Error       string    `json:"error,omitempty"` // the last fetch error, if not cleared since
	ErrorAt     time.Time `json:"error_at,omitzero"`
	// Attrs are the upstream's facts about the image (an item's ftype,
	// LXD's fingerprint, a layer's media type): user.imgcache.<key>.
	Attrs map[string]string `json:"attrs,omitempty"`
	// Retired is when the image left the upstream's catalog; it stays
	// listed while cached (a mirror's). Absent while it is listed.
	Retired time.Time `json:"retired,omitzero"`
}

// The kinds of pin rule.
const (
	PinName  = "name"  // the image at a name, whichever version it is now
	PinGlob  = "glob"  // images whose name (or a directory above it) a glob matches; of a mirror's products, the newest version
	PinAlias = "alias" // the newest version of the products of an alias (simplestreams: "debian/12", "debian/12/amd64")
)

// Pin is a pin rule and what it keeps cached now.
type Pin struct {
	Kind    string    `json:"kind"`    // PinName, PinGlob or PinAlias
	Pattern string    `json:"pattern"` // the name, glob or alias
	Added   time.Time `json:"added,omitzero"`
	Images  []string  `json:"images"` // the images it pins now, sorted
}

// EvictResult says what an eviction dropped.
type EvictResult struct {
	Evicted    []string `json:"evicted"`           // images whose cached bytes were dropped
	Skipped    []string `json:"skipped,omitempty"` // images kept because they are open or pinned
	FreedBytes int64    `json:"freed_bytes"`       // disk space freed (allocated blocks)
}

// PruneResult says what a prune evicted and where usage stands.
type PruneResult struct {
	Evicted       []string `json:"evicted"` // least recently used first
	FreedBytes    int64    `json:"freed_bytes"`
	UsageBytes    int64    `json:"usage_bytes"`               // disk use of the cache after the prune
	LowWaterBytes int64    `json:"low_water_bytes,omitempty"` // a prune evicts until usage is below this
	MaxBytes      int64    `json:"max_bytes,omitempty"`
}

// CleanResult says what the cleaner reaped.
type CleanResult struct {
	Removed    []string `json:"removed"` // stalled partial or invalid images whose bytes were dropped
	FreedBytes int64    `json:"freed_bytes"`
}

// VerifyResult is the outcome of checking cached bytes at rest against
// the per-chunk checksums recorded when each image was verified.
type VerifyResult struct {
	Images    int            `json:"images"`     // images checked
	Chunks    int            `json:"chunks"`     // chunks read and compared
	Bytes     int64          `json:"bytes"`      // bytes read
	BadChunks int            `json:"bad_chunks"` // chunks that no longer matched, now dropped
	Invalid   int            `json:"invalid"`    // images whose bytes did not hash to their digest
	Reports   []VerifyReport `json:"reports"`    // one per image, in name order
}

// VerifyReport is what a check found in one image.
type VerifyReport struct {
	Name      string `json:"name"`
	State     string `json:"state"` // after the check
	Chunks    int    `json:"chunks"`
	BadChunks int    `json:"bad_chunks"`
	Message   string `json:"message"`
}

// Failed reports whether the check found something wrong with the image.
func (r VerifyReport) Failed() bool { return r.BadChunks > 0 || r.State == "invalid" }

// Stats is the daemon's state and counters. Counters start at zero with
// each daemon; the rest is measured when asked.
type Stats struct {
	Source     string    `json:"source"`
	Mountpoint string    `json:"mountpoint"`
	CacheDir   string    `json:"cache_dir"`
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	// ServeMode says how complete images are read: "passthrough" (the
	// kernel reads the cache file itself) or "page-cache" (reads go
	// through the daemon unless the kernel's page cache has them).
	ServeMode string `json:"serve_mode,omitempty"`

	Images      int            `json:"images"`
	ImagesCold  int            `json:"images_cold"` // of them, those nothing has happened to (held in a compact form)
	ByState     map[string]int `json:"by_state"`
	Pinned      int            `json:"pinned"`
	QueueLength int            `json:"queue_length"`
	CacheBytes  int64          `json:"cache_bytes"`         // disk space of the cached data (allocated blocks)
	MaxBytes    int64          `json:"max_bytes,omitempty"` // the size limit
	IndexBytes  int64          `json:"index_bytes"`         // disk space of the index (taken off the limit)

	Opens           uint64 `json:"opens"`
	Hits            uint64 `json:"hits"`
	Misses          uint64 `json:"misses"`
	UpstreamBytes   uint64 `json:"upstream_bytes"`
	ServedBytes     uint64 `json:"served_bytes"`
	Evictions       uint64 `json:"evictions"`
	Errors          uint64 `json:"errors"`
	Retries         uint64 `json:"retries"`
	DirectReads     uint64 `json:"direct_reads"` // reads served from the upstream without storing: no room
	FetchesInFlight int64  `json:"fetches_in_flight"`
}

// apiError is the body of every error reply.
type apiError struct {
	Error string `json:"error"`
}
