package httpdir

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpclient"
)

// List returns the catalog: the origin index if there is one, else what
// the directory listings offer. See the package comment.
func (u *Upstream) List(ctx context.Context) ([]upstream.Entry, error) {
	entries, err := u.listIndex(ctx)
	if errors.Is(err, errNotOrigin) {
		return u.crawl(ctx)
	}
	return entries, err
}

// The files a crawl finds are kept in two slices side by side, their
// entries and what the crawl learned of each (fileMeta), with no object
// or map entry per file: a mirror of a million images held them three
// ways at once (an object per file, a map by name and the entries built
// from them), most of the daemon's peak during its refresh. The entries
// slice is the one returned.
type crawled struct {
	entries []upstream.Entry
	meta    []fileMeta
}

// fileMeta is what a crawl learned of a file besides its entry.
type fileMeta struct {
	row       string // the HTML listing's row of the file (see known.go)
	seq       int32  // the order it was found in: of two links to one name, the first counts
	sumsDepth int16  // components of the directory whose SHA256SUMS gave entry.Digest
	sized     bool   // entry.Size is known
	gone      bool   // HEAD said 404: listed, then removed
}

// file is one crawled file, in place in both slices.
type file struct {
	entry *upstream.Entry
	*fileMeta
}

func (c *crawled) file(i int) file { return file{&c.entries[i], &c.meta[i]} }

// sort orders the files by name and drops the second and later links to
// a name (a listing may link a file twice, or a file below it that the
// file's own directory lists too).
func (c *crawled) sort() {
	sort.Sort(byName{c})
	n := 0
	for i := range c.entries {
		if n > 0 && c.entries[i].Name == c.entries[n-1].Name {
			continue
		}
		c.entries[n], c.meta[n] = c.entries[i], c.meta[i]
		n++
	}
	clear(c.entries[n:])
	clear(c.meta[n:])
	c.entries, c.meta = c.entries[:n], c.meta[:n]
}

// find returns the file called name, after sort.
func (c *crawled) find(name string) (file, bool) {
	i, ok := slices.BinarySearchFunc(c.entries, name, func(e upstream.Entry, name string) int { return strings.Compare(e.Name, name) })
	if !ok {
		return file{}, false
	}
	return c.file(i), true
}

type byName struct{ c *crawled }

func (b byName) Len() int { return len(b.c.entries) }
func (b byName) Less(i, j int) bool {
	if a, z := b.c.entries[i].Name, b.c.entries[j].Name; a != z {
		return a < z
	}
	return b.c.meta[i].seq < b.c.meta[j].seq
}
func (b byName) Swap(i, j int) {
	b.c.entries[i], b.c.entries[j] = b.c.entries[j], b.c.entries[i]
	b.c.meta[i], b.c.meta[j] = b.c.meta[j], b.c.meta[i]
}

// crawl lists the base and every subdirectory below it, breadth first.
// Each directory is listed once, and only directories below the one
// being listed are followed, so there can be no cycle.
func (u *Upstream) crawl(ctx context.Context) ([]upstream.Entry, error) {
	since := u.known.begin()
	hint := int(u.lastCrawl.Load())
	if n, ok := u.known.count(); ok {
		hint = max(hint, n)
	}
	hint = min(hint+hint/16, u.opts.MaxEntries) // room to grow without copying a million entries
	c := &crawled{entries: make([]upstream.Entry, 0, hint), meta: make([]fileMeta, 0, hint)}
	queue := []string{""}
	listed := map[string]bool{"": true}
	for fetches := 0; len(queue) > 0; fetches++ {
		if fetches == u.opts.MaxListings {
			return nil, fmt.Errorf("%s: more than %d directory listings; the cap is MaxListings", u.shown, u.opts.MaxListings)
		}
		dir := queue[0]
		queue = queue[1:]
		l, err := u.listDir(ctx, dir)
		if errors.Is(err, upstream.ErrNotFound) && dir != "" {
			u.log.Warn("httpdir: directory gone while listing", "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, lk := range l.links {
			switch {
			case lk.dir && listed[lk.name]:
			case lk.dir && strings.Count(lk.name, "/")+1 >= u.opts.MaxDepth:
				u.log.Warn("httpdir: directory not listed: its files' names would be too deep",
					"dir", u.URL(lk.name)+"/", "max_depth", u.opts.MaxDepth)
			case lk.dir:
				listed[lk.name] = true
				queue = append(queue, lk.name)
			default:
				if len(c.entries) == u.opts.MaxEntries {
					c.sort() // links to one name count once
					if len(c.entries) == u.opts.MaxEntries {
						return nil, fmt.Errorf("%s: more than %d files; the cap is MaxEntries", u.shown, u.opts.MaxEntries)
					}
				}
				c.entries = append(c.entries, upstream.Entry{Name: lk.name, Size: lk.size, ModTime: lk.mtime})
				c.meta = append(c.meta, fileMeta{row: lk.row, seq: int32(len(c.meta)), sized: lk.size >= 0})
			}
		}
	}
	c.sort()
	if err := u.statAll(ctx, c); err != nil {
		return nil, err
	}
	u.known.replace(c, since)
	if err := u.applySums(ctx, c); err != nil {
		return nil, err
	}
	n := 0
	for i, m := range c.meta {
		if m.sized && !m.gone {
			c.entries[n] = c.entries[i]
			n++
		}
	}
	clear(c.entries[n:])
	u.lastCrawl.Store(int64(n))
	return c.entries[:n], nil
}

// listDir fetches and parses the listing of one directory and logs the
// names it refuses.
func (u *Upstream) listDir(ctx context.Context, name string) (listing, error) {
	d := dirRef{url: u.dirURL(name), name: name}
	body, header, err := u.getBody(ctx, d.url, u.opts.MaxListingBytes, "directory listing")
	if err != nil {
		return listing{}, err
	}
	l, err := parseListing(body, header, d)
	if err != nil {
		return listing{}, fmt.Errorf("%s: %w", describe("GET", d.url, ""), err)
	}
	for _, err := range l.refused {
		u.log.Warn("httpdir: listed name left out", "dir", upstream.Redact(d.url), "err", err)
	}
	return l, nil
}

// statAll asks for the size and validators of every file a listing gave
// no size for, unless they are known (known.go).
func (u *Upstream) statAll(ctx context.Context, c *crawled) error {
	var todo []file
	for i := range c.entries {
		f := c.file(i)
		if f.sized {
			continue
		}
		if e, ok := u.known.lookup(f.entry.Name, f.row); ok {
			*f.entry, f.sized = e, true
			continue
		}
		todo = append(todo, f)
	}
	return forEach(ctx, u.opts.HeadConcurrency, todo, u.stat)
}

// stat fills in f from a HEAD reply, or from a one-byte range GET if the
// server refuses HEAD or gives no length. A file that is gone (404) is
// dropped; any other failure fails the List, because a catalog missing
// the file would make the cache drop it.
func (u *Upstream) stat(ctx context.Context, f file) error {
	target := u.fileURL(f.entry.Name)
	resp, err := u.probe(ctx, "HEAD", target, "")
	if err != nil {
		return err
	}
	size := int64(-1)
	switch {
	case resp.StatusCode == http.StatusOK && checkEncoding(resp.Header) == nil:
		size = resp.ContentLength
	case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
	default:
		return u.statFailed(f, describe("HEAD", target, ""), resp)
	}
	if size < 0 {
		if resp, err = u.probe(ctx, "GET", target, "bytes=0-0"); err != nil {
			return err
		}
		if size = sizeFromProbe(resp); size < 0 {
			return u.statFailed(f, describe("GET", target, "bytes=0-0"), resp)
		}
	}
	f.entry.Size, f.sized = size, true
	f.entry.ETag = usableETag(resp.Header.Get("ETag"))
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		f.entry.ModTime = t
	}
	return nil
}

// statFailed decides about a file whose size could not be had.
func (u *Upstream) statFailed(f file, desc string, resp *http.Response) error {
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		u.log.Warn("httpdir: listed file gone", "err", &requestError{req: desc, err: newStatusError(resp)})
		f.gone = true
		return nil
	}
	if resp.StatusCode/100 == 2 {
		u.log.Warn("httpdir: listed file left out: the server gives no size", "url", u.URL(f.entry.Name))
		f.gone = true
		return nil
	}
	return &requestError{req: desc, err: newStatusError(resp)}
}

// sizeFromProbe reads the size of a file from the reply to a one-byte
// range GET: Content-Range's total, or the length of a whole-file reply;
// an empty file is 416 with "bytes */0". -1 if it does not tell.
func sizeFromProbe(resp *http.Response) int64 {
	if checkEncoding(resp.Header) != nil {
		return -1
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if _, _, total, err := httpclient.ParseContentRange(resp.Header.Get("Content-Range")); err == nil {
			return total
		}
	case http.StatusOK:
		return resp.ContentLength
	case http.StatusRequestedRangeNotSatisfiable:
		if n, ok := strings.CutPrefix(resp.Header.Get("Content-Range"), "bytes */"); ok {
			if total, err := httpclient.ParseCount(n); err == nil {
				return total
			}
		}
	}
	return -1
}

// probe makes a request for its headers only: the body, if any, is
// closed unread.
func (u *Upstream) probe(ctx context.Context, method string, target *url.URL, rng string) (*http.Response, error) {
	desc := describe(method, target, rng)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := u.stallTimer(cancel)
	defer stall.Stop()
	req, err := newRequest(ctx, method, target)
	if err != nil {
		return nil, transportError(ctx, desc, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := u.opts.Client.Do(req)
	if err != nil {
		return nil, transportError(ctx, desc, err)
	}
	resp.Body.Close()
	return resp, nil
}

// applySums reads every listed SHA256SUMS and gives its digests to the
// files it names. When two name the same file, the one nearest to it
// wins: it is the one whose directory the file is in.
func (u *Upstream) applySums(ctx context.Context, c *crawled) error {
	var sumsFiles []file
	for i := range c.entries {
		if f := c.file(i); path.Base(f.entry.Name) == SumsFile && !f.gone {
			sumsFiles = append(sumsFiles, f)
		}
	}
	var mu sync.Mutex
	return forEach(ctx, u.opts.HeadConcurrency, sumsFiles, func(ctx context.Context, sf file) error {
		target := u.fileURL(sf.entry.Name)
		body, _, err := u.getBody(ctx, target, u.opts.MaxSumsBytes, SumsFile)
		if errors.Is(err, upstream.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		sums, refused := parseSHA256SUMS(body)
		for _, err := range refused {
			u.log.Warn("httpdir: SHA256SUMS line left out", "url", upstream.Redact(target), "err", err)
		}
		dir, depth := "", 0
		if i := strings.LastIndexByte(sf.entry.Name, '/'); i >= 0 {
			dir, depth = sf.entry.Name[:i+1], strings.Count(sf.entry.Name, "/")
		}
		mu.Lock()
		defer mu.Unlock()
		for rel, digest := range sums {
			f, ok := c.find(dir + rel)
			if !ok || f.entry.Digest != "" && int(f.sumsDepth) >= depth {
				continue
			}
			f.entry.Digest, f.sumsDepth = digest, int16(depth)
		}
		return nil
	})
}

// forEach calls fn for every item, at most limit at a time. After the
// first error it starts no more calls, cancels the ones running, and
// returns that error.
func forEach[T any](ctx context.Context, limit int, items []T, fn func(context.Context, T) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for _, it := range items {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if gctx.Err() != nil { // cancelled while this waited for its turn
				return nil
			}
			return fn(gctx, it)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return context.Cause(ctx)
}
