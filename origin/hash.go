package origin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// errChangedWhileHashing: the file was being written while it was read.
var errChangedWhileHashing = errors.New("changed while being hashed")

// hashCache knows the sha256 of the versions of files it has hashed.
// Each version is hashed once, however many index requests want it at
// the same time (a single flight per path and version), and at most
// `workers` files are hashed at once across all requests.
type hashCache struct {
	// read only
	root    *os.Root
	workers int
	sem     *semaphore.Weighted // a slot per file being hashed
	ctx     context.Context     // cancelled by close: flights stop reading
	cancel  context.CancelFunc

	flights singleflight.Group // keyed by flightKey
	hashed  atomic.Int64       // files hashed to the end, for tests and logs
	flying  atomic.Int64       // flights running, for tests

	mu      sync.Mutex // protects the following
	sums    map[string]hashed
	closed  bool
	running sync.WaitGroup // flights; added to only while !closed
}

type hashed struct {
	key fileKey
	sum string // lowercase hex
}

// flightKey names the hashing of one version of a file.
func flightKey(name string, key fileKey) string {
	return fmt.Sprintf("%d-%d-%d/%s", key.ino, key.size, key.mtime, name)
}

func newHashCache(root *os.Root, workers int) *hashCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &hashCache{
		root:    root,
		workers: workers,
		sem:     semaphore.NewWeighted(int64(workers)),
		ctx:     ctx,
		cancel:  cancel,
		sums:    map[string]hashed{},
	}
}

// close stops the flights and waits for them to end.
func (c *hashCache) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.running.Wait()
}

// known returns the digest of the file name if it is of version key.
func (c *hashCache) known(name string, key fileKey) (hashed, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.sums[name]
	return h, ok && h.key == key
}

// sum returns the digest of the file name, whose version the directory
// walk saw as key. The version hashed may be newer than key (the file
// changed since the walk): the result says which one it is.
func (c *hashCache) sum(ctx context.Context, name string, key fileKey) (hashed, error) {
	if h, ok := c.known(name, key); ok {
		return h, nil
	}
	// The flight runs on its own, not on ctx: one requester going away
	// must not fail the others waiting for the same file.
	ch := c.flights.DoChan(flightKey(name, key), func() (any, error) { return c.fly(name, key) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return hashed{}, r.Err
		}
		return r.Val.(hashed), nil
	case <-ctx.Done():
		return hashed{}, ctx.Err()
	}
}

// fly hashes one version of a file, once a slot is free.
func (c *hashCache) fly(name string, key fileKey) (hashed, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return hashed{}, c.ctx.Err()
	}
	c.running.Add(1)
	c.mu.Unlock()
	defer c.running.Done()
	c.flying.Add(1)
	defer c.flying.Add(-1)

	// A flight that ended between the caller's look and this one's start
	// has left the sum.
	if h, ok := c.known(name, key); ok {
		return h, nil
	}
	if err := c.sem.Acquire(c.ctx, 1); err != nil {
		return hashed{}, err
	}
	h, err := c.hashFile(name)
	c.sem.Release(1)
	if err != nil {
		return hashed{}, err
	}
	c.mu.Lock()
	c.sums[name] = h
	c.mu.Unlock()
	return h, nil
}

// hashFile hashes the file as it is now; it fails if the file changes
// while it is read.
func (c *hashCache) hashFile(name string) (hashed, error) {
	f, err := c.root.Open(name)
	if err != nil {
		return hashed{}, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return hashed{}, err
	}
	if !before.Mode().IsRegular() {
		return hashed{}, fmt.Errorf("%q: not a regular file", name)
	}
	h := sha256.New()
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(h, ctxReader{c.ctx, f}, buf); err != nil {
		return hashed{}, err
	}
	after, err := f.Stat()
	if err != nil {
		return hashed{}, err
	}
	if keyOf(before) != keyOf(after) {
		return hashed{}, fmt.Errorf("%q: %w", name, errChangedWhileHashing)
	}
	c.hashed.Add(1)
	return hashed{key: keyOf(before), sum: hex.EncodeToString(h.Sum(nil))}, nil
}

// forget drops the digests of files not in seen (removed since), so
// that the cache does not grow with every file that ever was.
func (c *hashCache) forget(seen map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.sums {
		if !seen[name] {
			delete(c.sums, name)
		}
	}
}

// ctxReader stops a long read when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
