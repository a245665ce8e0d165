// Package upstreamtest is the fake upstream that tests share: images held
// in memory, listed and served under the upstream.Upstream contract
// (ranges, ErrNotFound), counting what it serves, and told to fail, hang,
// lie about a digest or go down. Protocol packages test against real
// servers; this is for the engine, the filesystem and the wrappers of
// upstreams (failover), and for fault injection.
package upstreamtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// ModTime is the modification time of every image listed.
var ModTime = time.Unix(1700000000, 0)

// Upstream is an in-memory upstream. The zero value is not usable; call
// New.
type Upstream struct {
	url string // read only

	mu       sync.Mutex // protects the following
	images   map[string][]byte
	entries  map[string]upstream.Entry                                                // listed as given (AddEntry)
	bodies   map[string][]byte                                                        // bytes served for an entry (AddEntryData)
	wrap     func(ctx context.Context, name string, body io.ReadCloser) io.ReadCloser // nil: bodies as they are
	digests  map[string]string                                                        // name -> digest to publish ("" none)
	listErr  error                                                                    // every List fails with it
	downErr  error                                                                    // every List and Fetch fails with it
	fetchErr func(name string, off, n int64) error                                    // nil: serve
	gate     chan struct{}                                                            // if set, each fetch waits for a token
	whole    bool                                                                     // ignore ranges: every reply is the whole image
	retains  bool                                                                     // RetainsRemoved
	warnings []string                                                                 // Warnings
	told     [][]upstream.Entry                                                       // what Remember was given, each call
	byName   map[string]int64                                                         // Fetch calls by name

	fetched  atomic.Int64 // bytes served
	requests atomic.Int64 // Fetch calls
	calls    atomic.Int64 // List and Fetch calls
}

var (
	_ upstream.Upstream   = (*Upstream)(nil)
	_ upstream.Rememberer = (*Upstream)(nil)
	_ upstream.Retainer   = (*Upstream)(nil)
	_ upstream.Warner     = (*Upstream)(nil)
)

// New returns an empty upstream whose URL is url (names are appended).
func New(url string) *Upstream {
	return &Upstream{url: url, images: map[string][]byte{}, digests: map[string]string{},
		entries: map[string]upstream.Entry{}, bodies: map[string][]byte{}, byName: map[string]int64{}}
}

// Digest is the "sha256:<hex>" digest of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// Add lists an image called name holding data, publishing its digest if
// withDigest. Adding a name again makes a new version.
func (u *Upstream) Add(name string, data []byte, withDigest bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.images[name] = data
	if withDigest {
		u.digests[name] = Digest(data)
	} else {
		delete(u.digests, name)
	}
}

// AddEntry lists e exactly as given, whatever it says (hostile entries,
// fields a protocol fills), and serves any range of it as bytes that
// depend only on the offset (OffsetBytes), so an image of any size can be
// read anywhere; an entry with Content serves its Content.
func (u *Upstream) AddEntry(e upstream.Entry) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.entries[e.Name] = e
	delete(u.bodies, e.Name)
}

// AddEntryData lists e exactly as given and serves data for it (the
// bytes of a ByDigest blob, say, while e carries whatever a protocol
// would say of it).
func (u *Upstream) AddEntryData(e upstream.Entry, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.entries[e.Name] = e
	u.bodies[e.Name] = data
}

// Remove takes an image out of the listing.
func (u *Upstream) Remove(name string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.images, name)
	delete(u.digests, name)
	delete(u.entries, name)
	delete(u.bodies, name)
}

// Replace changes the bytes served for name and nothing else that is
// listed but the ETag (which follows the bytes): the digest published
// stays, so the upstream may lie.
func (u *Upstream) Replace(name string, data []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.images[name] = data
}

// SetDigest publishes digest for name, whatever its bytes hash to.
func (u *Upstream) SetDigest(name, digest string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.digests[name] = digest
}

// SetListErr makes every List fail with err (nil: list again).
func (u *Upstream) SetListErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.listErr = err
}

// SetDown makes every List and Fetch fail with err (nil: up again).
func (u *Upstream) SetDown(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.downErr = err
}

// SetFetchErr calls fn before each fetch of an image it has; an error
// fn returns is the fetch's (nil fn: serve).
func (u *Upstream) SetFetchErr(fn func(name string, off, n int64) error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.fetchErr = fn
}

// SetGate makes each fetch wait for a token from gate, or for its
// context to end (nil: no waiting).
func (u *Upstream) SetGate(gate chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gate = gate
}

// SetBody makes every body served pass through wrap (a slow or broken
// link); nil: bodies as they are.
func (u *Upstream) SetBody(wrap func(ctx context.Context, name string, body io.ReadCloser) io.ReadCloser) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.wrap = wrap
}

// SetIgnoreRange makes every reply the whole image, as a server that
// ignores Range sends it: its reader yields the range asked for unless
// ReadWhole is called first (upstream.WholeReader). The bytes of such a
// reply count as served as they are read.
func (u *Upstream) SetIgnoreRange(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.whole = on
}

// SetRetains says what RetainsRemoved answers.
func (u *Upstream) SetRetains(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.retains = on
}

// RetainsRemoved is upstream.Retainer's: as set by SetRetains (false at
// first).
func (u *Upstream) RetainsRemoved() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.retains
}

// SetWarnings sets what Warnings answers.
func (u *Upstream) SetWarnings(w []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.warnings = w
}

// Warnings is upstream.Warner's: as set by SetWarnings.
func (u *Upstream) Warnings() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.warnings
}

// Remember records what it is given (upstream.Rememberer), each entry
// the Known holds, and nothing more: the fake lists what it holds.
func (u *Upstream) Remember(known upstream.Known) {
	entries := slices.Collect(known.All())
	u.mu.Lock()
	defer u.mu.Unlock()
	u.told = append(u.told, entries)
}

// Remembered is what each call of Remember was given, in order.
func (u *Upstream) Remembered() [][]upstream.Entry {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.told
}

// RequestsFor is the number of Fetch calls for the entry called name.
func (u *Upstream) RequestsFor(name string) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byName[name]
}

// Fetched is the number of bytes served.
func (u *Upstream) Fetched() int64 { return u.fetched.Load() }

// Requests is the number of Fetch calls.
func (u *Upstream) Requests() int64 { return u.requests.Load() }

// Calls is the number of List and Fetch calls.
func (u *Upstream) Calls() int64 { return u.calls.Load() }

// List lists the images, sorted by name.
func (u *Upstream) List(ctx context.Context) ([]upstream.Entry, error) {
	u.calls.Add(1)
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.downErr != nil {
		return nil, u.downErr
	}
	if u.listErr != nil {
		return nil, u.listErr
	}
	var es []upstream.Entry
	for name, b := range u.images {
		es = append(es, upstream.Entry{Name: name, Size: int64(len(b)), Digest: u.digests[name],
			ModTime: ModTime, ETag: fmt.Sprintf("%q", Digest(b)[7:23])})
	}
	for _, e := range u.entries {
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	return es, nil
}

// Fetch serves bytes [off, off+n) of the image e names.
func (u *Upstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	u.calls.Add(1)
	u.requests.Add(1)
	u.mu.Lock()
	gate, down := u.gate, u.downErr
	u.mu.Unlock()
	if down != nil {
		return nil, down
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	u.mu.Lock()
	u.byName[e.Name]++
	b, ok := u.images[e.Name]
	le, listed := u.entries[e.Name]
	if body, has := u.bodies[e.Name]; listed && has {
		b, ok = body, true
	} else if listed && le.Content != nil {
		b, ok = le.Content, true
	}
	fn, wrap, whole := u.fetchErr, u.wrap, u.whole
	u.mu.Unlock()
	if !ok && !listed {
		return nil, upstream.ErrNotFound
	}
	if fn != nil {
		if err := fn(e.Name, off, n); err != nil {
			return nil, err
		}
	}
	var body io.ReadCloser
	switch {
	case off < 0 || n < 0:
		return nil, fmt.Errorf("range %d+%d of %q", off, n, e.Name)
	case whole && ok && off+n <= int64(len(b)):
		body = &wholeBody{u: u, all: b, off: off, n: n}
		if wrap != nil {
			body = &wrappedWhole{ReadCloser: wrap(ctx, e.Name, body), w: body.(*wholeBody)}
		}
		return body, nil
	case !ok:
		body = io.NopCloser(io.LimitReader(&OffsetBytes{Off: off}, n))
	case off+n > int64(len(b)):
		return nil, fmt.Errorf("range %d+%d past the end of %q (%d bytes)", off, n, e.Name, len(b))
	default:
		body = io.NopCloser(bytes.NewReader(b[off : off+n]))
	}
	u.fetched.Add(n)
	if wrap != nil {
		body = wrap(ctx, e.Name, body)
	}
	return body, nil
}

// wholeBody is a reply of the whole image to a range request.
type wholeBody struct {
	u      *Upstream
	all    []byte
	off, n int64 // the range asked for
	pos    int64 // the next byte of all to send
	began  bool
	whole  bool
}

var _ upstream.WholeReader = (*wholeBody)(nil)

func (w *wholeBody) ReadWhole() bool {
	if w.began {
		return false
	}
	w.whole = true
	return true
}

func (w *wholeBody) Read(p []byte) (int, error) {
	w.began = true
	if !w.whole && w.pos < w.off { // the bytes before the range are sent and thrown away
		w.u.fetched.Add(w.off - w.pos)
		w.pos = w.off
	}
	end := int64(len(w.all))
	if !w.whole {
		end = w.off + w.n
	}
	if w.pos >= end {
		return 0, io.EOF
	}
	k := copy(p, w.all[w.pos:end])
	w.pos += int64(k)
	w.u.fetched.Add(int64(k))
	return k, nil
}

func (w *wholeBody) Close() error { return nil }

// wrappedWhole is a whole body behind SetBody's wrapper, still a
// WholeReader.
type wrappedWhole struct {
	io.ReadCloser
	w *wholeBody
}

func (b *wrappedWhole) ReadWhole() bool { return b.w.ReadWhole() }

// OffsetBytes yields byte(offset) at each offset from Off on.
type OffsetBytes struct{ Off int64 }

func (r *OffsetBytes) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.Off)
		r.Off++
	}
	return len(p), nil
}

// URL is the upstream's URL with name appended.
func (u *Upstream) URL(name string) string { return u.url + name }
