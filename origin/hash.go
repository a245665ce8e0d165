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
)

// errChangedWhileHashing: the file was being written while it was read.
var errChangedWhileHashing = errors.New("changed while being hashed")

// hashCache knows the sha256 of the versions of files it has hashed.
// Each version is hashed once, however many index requests want it at
// the same time (a single flight per path and version), and at most
// `workers` files are hashed at once across all requests.
type hashCache struct {
	// read only
	root   *os.Root
	sem    chan struct{}   // a slot per file being hashed
	ctx    context.Context // cancelled by close: flights stop reading
	cancel context.CancelFunc
	wg     sync.WaitGroup // flights running

	hashed atomic.Int64 // files hashed to the end, for tests and logs

	mu      sync.Mutex // protects the following
	sums    map[string]hashed
	flights map[flightKey]*flight
}

type hashed struct {
	key fileKey
	sum string // lowercase hex
}

type flightKey struct {
	name string
	key  fileKey
}

// flight is one hashing of one version of a file; done is closed when
// res is set.
type flight struct {
	done chan struct{}
	res  hashed
	err  error
}

func newHashCache(root *os.Root, workers int) *hashCache {
	ctx, cancel := context.WithCancel(context.Background())
	return &hashCache{
		root:    root,
		sem:     make(chan struct{}, workers),
		ctx:     ctx,
		cancel:  cancel,
		sums:    map[string]hashed{},
		flights: map[flightKey]*flight{},
	}
}

// close stops the flights and waits for them to end.
func (c *hashCache) close() {
	c.cancel()
	c.wg.Wait()
}

// sum returns the digest of the file name, whose version the directory
// walk saw as key. The version hashed may be newer than key (the file
// changed since the walk): the result says which one it is.
func (c *hashCache) sum(ctx context.Context, name string, key fileKey) (hashed, error) {
	fk := flightKey{name, key}
	c.mu.Lock()
	if h, ok := c.sums[name]; ok && h.key == key {
		c.mu.Unlock()
		return h, nil
	}
	fl, ok := c.flights[fk]
	if !ok {
		fl = &flight{done: make(chan struct{})}
		c.flights[fk] = fl
		// The flight runs on its own, not on ctx: one requester going
		// away must not fail the others waiting for the same file.
		c.wg.Add(1)
		go c.fly(fk, fl)
	}
	c.mu.Unlock()
	select {
	case <-fl.done:
		return fl.res, fl.err
	case <-ctx.Done():
		return hashed{}, ctx.Err()
	}
}

func (c *hashCache) fly(fk flightKey, fl *flight) {
	defer c.wg.Done()
	select {
	case c.sem <- struct{}{}:
		fl.res, fl.err = c.hashFile(fk.name)
		<-c.sem
	case <-c.ctx.Done():
		fl.err = c.ctx.Err()
	}
	c.mu.Lock()
	if fl.err == nil {
		c.sums[fk.name] = fl.res
	}
	delete(c.flights, fk)
	c.mu.Unlock()
	close(fl.done)
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
