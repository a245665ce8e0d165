package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpclient"
)

// Blob ranges are fetched here rather than with oras-go's blob store: its
// Fetch sends a GET of the whole blob, and only a Seek afterwards asks
// for a range, with no check of Content-Range; a cache needs one checked
// Range GET per run of chunks.

// Fetch returns a reader of the bytes [off, off+n) of e: from its
// Content or a manifest the catalog holds, else a Range GET of the blob.
func (u *Upstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n < 0 || off+n > e.Size {
		return nil, fmt.Errorf("oci: %q: range [%d, %d) is outside its %d bytes", e.Name, off, off+n, e.Size)
	}
	if e.Content != nil {
		return io.NopCloser(bytes.NewReader(e.Content[off : off+n])), nil
	}
	if !validDigest(e.Digest) {
		return nil, fmt.Errorf("oci: %q: no digest to fetch it by", e.Name)
	}
	u.mu.Lock()
	m := u.manifests[e.Digest]
	repo := u.blobRepo[e.Digest]
	u.mu.Unlock()
	if m != nil && int64(len(m.raw)) == e.Size {
		return io.NopCloser(bytes.NewReader(m.raw[off : off+n])), nil
	}
	if repo == "" {
		if repo, _ = splitName(e.Name); repo == "" {
			return nil, fmt.Errorf("oci: %q: no repository holds it: %w", e.Name, upstream.ErrNotFound)
		}
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	return u.fetchBlob(ctx, repo, e, off, n)
}

// fetchBlob is one Range GET of /v2/<repo>/blobs/<digest>.
func (u *Upstream) fetchBlob(ctx context.Context, repo string, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	target := u.repoURL(repo, "blobs", e.Digest)
	rng := fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	desc := "GET " + target + " " + rng

	ctx, cancel := context.WithCancelCause(ctx)
	stall := time.AfterFunc(u.opts.StallTimeout, func() {
		cancel(fmt.Errorf("%w: no byte for %v", upstream.ErrStalled, u.opts.StallTimeout))
	})
	fail := func(err error) (io.ReadCloser, error) {
		stall.Stop()
		cancel(nil)
		return nil, err
	}
	req, err := u.newRequest(ctx, http.MethodGet, target)
	if err != nil {
		return fail(transportError(desc, err))
	}
	req.Header.Set("Range", rng)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := u.client.Do(req)
	stall.Stop()
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, upstream.ErrStalled) {
			err = cause
		}
		return fail(transportError(desc, err))
	}
	skip, yield, err := checkBlobReply(resp, e, off, n)
	if err != nil {
		resp.Body.Close()
		return fail(&requestError{req: desc, err: err})
	}
	if skip > 0 {
		u.ignoresRange.Do(func() {
			u.log.Warn("oci: the registry answered a Range request with the whole blob (a pull-through cache fetching it?); skipping to the range", "registry", u.host, "blob", e.Digest)
		})
	}
	return &rangeReader{
		desc: desc, body: resp.Body, ctx: ctx, cancel: cancel,
		stall: stall, timeout: u.opts.StallTimeout,
		skip: skip, left: yield, want: n,
		whole: resp.StatusCode == http.StatusOK, size: e.Size,
	}, nil
}

// checkBlobReply checks that resp carries [off, off+n) of e, or a prefix
// of it: a 206 of that range, or a 200 of the whole blob (skip the bytes
// before off). The registry's digest headers, when it sends them, must
// name e's digest.
func checkBlobReply(resp *http.Response, e upstream.Entry, off, n int64) (skip, yield int64, err error) {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return 0, 0, fmt.Errorf("reply has Content-Encoding %q; only identity is usable", truncate(ce, 64))
	}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
		if d := resp.Header.Get("Docker-Content-Digest"); d != "" && d != e.Digest {
			return 0, 0, fmt.Errorf("the registry sent blob %s for %s", truncate(d, 80), e.Digest)
		}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "multipart/") {
			return 0, 0, fmt.Errorf("206 reply is %s; one range was asked for", truncate(ct, 64))
		}
		cr := resp.Header.Get("Content-Range")
		first, last, total, err := httpclient.ParseContentRange(cr)
		switch {
		case err != nil:
			return 0, 0, fmt.Errorf("206 reply: %w", err)
		case total >= 0 && total != e.Size:
			return 0, 0, fmt.Errorf("Content-Range %q: the blob has %d bytes, its manifest says %d", cr, total, e.Size)
		case first != off || last > off+n-1:
			return 0, 0, fmt.Errorf("Content-Range %q is not the range asked for", cr)
		case resp.ContentLength >= 0 && resp.ContentLength != last-first+1:
			return 0, 0, fmt.Errorf("Content-Length %d does not match Content-Range %q", resp.ContentLength, cr)
		}
		return 0, last - first + 1, nil
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != e.Size {
			return 0, 0, fmt.Errorf("whole blob of %d bytes, its manifest says %d", resp.ContentLength, e.Size)
		}
		return off, n, nil
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, 0, fmt.Errorf("%s (Content-Range %q): the registry's blob is shorter than its manifest says", resp.Status, truncate(resp.Header.Get("Content-Range"), 80))
	default:
		return 0, 0, newStatusError(resp)
	}
}

// rangeReader yields the checked bytes of a reply: after skip bytes, left
// bytes; then io.EOF if that is all that was asked (want), else
// ErrShortBody. It never yields more, however long the body. The stall
// timer runs around each Read of the body only: a slow reader is not a
// stalled registry.
type rangeReader struct {
	desc    string
	body    io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	stall   *time.Timer
	timeout time.Duration

	skip int64 // bytes before the range, to throw away (Range ignored)
	left int64 // bytes of the range still to yield
	got  int64 // bytes yielded
	want int64 // bytes asked for

	whole bool  // the reply is the whole blob (200)
	size  int64 // the blob's
	began bool  // Read was called
}

var (
	_ upstream.WholeReader = (*rangeReader)(nil)
	_ upstream.Splicer     = (*rangeReader)(nil)
)

// CanSplice says whether the reply's body can be spliced into a file: a
// plain-HTTP reply (oci+http) of a known length
// (httpclient.SpliceTransport).
func (r *rangeReader) CanSplice() bool {
	_, ok := r.body.(httpclient.SpliceBody)
	return ok
}

// SpliceTo moves the next n bytes the reader would yield into f at off
// (upstream.Splicer): the kernel moves them from the connection to the
// file, with the checks and errors of Read.
func (r *rangeReader) SpliceTo(f *os.File, off, n int64, write func(func() error) error) (int64, error) {
	sb, ok := r.body.(httpclient.SpliceBody)
	if !ok {
		return 0, fmt.Errorf("%s: the reply cannot be spliced", r.desc)
	}
	r.began = true
	if r.skip > 0 {
		k, err := io.CopyN(io.Discard, bodyReader{r}, r.skip)
		r.skip -= k
		if err != nil {
			return 0, r.fail(err)
		}
	}
	k, err := sb.SpliceTo(f, off, min(n, r.left), r.timeout, write)
	r.left -= k
	r.got += k
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return k, &requestError{req: r.desc, err: fmt.Errorf("%w: no byte for %v", upstream.ErrStalled, r.timeout)}
	case err != nil:
		return k, r.fail(err)
	case k < n:
		return k, r.short(fmt.Sprintf("the registry sent %d of %d bytes", r.got, r.want))
	}
	return k, nil
}

// bodyReader reads the reply's body behind the stall timer.
type bodyReader struct{ r *rangeReader }

func (b bodyReader) Read(p []byte) (int, error) { return b.r.read(p) }

// ReadWhole makes a reply of the whole blob yield all of it, so that the
// cache keeps every byte of it (upstream.WholeReader): a pull-through
// registry that sends a cold blob whole also finishes its own pull only
// if the reply is read to its end.
func (r *rangeReader) ReadWhole() bool {
	if !r.whole || r.began {
		return false
	}
	r.skip, r.left, r.want = 0, r.size, r.size
	return true
}

func (r *rangeReader) read(p []byte) (int, error) {
	r.stall.Reset(r.timeout)
	n, err := r.body.Read(p)
	r.stall.Stop()
	return n, err
}

func (r *rangeReader) Read(p []byte) (int, error) {
	r.began = true
	for r.skip > 0 {
		buf := p
		if int64(len(buf)) > r.skip {
			buf = buf[:r.skip]
		}
		if len(buf) == 0 {
			return 0, nil
		}
		k, err := r.read(buf)
		r.skip -= int64(k)
		if err != nil && !(err == io.EOF && r.skip == 0) {
			return 0, r.fail(err)
		}
	}
	if r.left == 0 {
		if r.got < r.want {
			return 0, r.short(fmt.Sprintf("the registry sent %d of %d bytes", r.got, r.want))
		}
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	k, err := r.read(p)
	r.left -= int64(k)
	r.got += int64(k)
	if err == io.EOF && r.left == 0 {
		err = nil // the next Read says EOF or short
	}
	if err != nil {
		return k, r.fail(err)
	}
	return k, nil
}

func (r *rangeReader) fail(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.short(fmt.Sprintf("body ended after %d of %d bytes", r.got, r.want))
	}
	if cause := context.Cause(r.ctx); errors.Is(cause, upstream.ErrStalled) {
		err = cause
	}
	return transportError(r.desc, err)
}

func (r *rangeReader) short(what string) error {
	return &requestError{req: r.desc, err: fmt.Errorf("%s: %w", what, upstream.ErrShortBody)}
}

func (r *rangeReader) Close() error {
	err := r.body.Close()
	r.cancel(nil)
	return err
}
