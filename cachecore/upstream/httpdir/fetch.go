package httpdir

import (
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

// stallTimer cancels a request when it fires; it runs while the request
// waits for headers, and a stallReader rearms it around each Read of the
// body. It is not running while the caller is away between Reads: a slow
// reader is not a stalled server.
func (u *Upstream) stallTimer(cancel context.CancelCauseFunc) *time.Timer {
	d := u.opts.StallTimeout
	return time.AfterFunc(d, func() { cancel(fmt.Errorf("%w: no byte for %v", upstream.ErrStalled, d)) })
}

type stallReader struct {
	r       io.Reader
	timer   *time.Timer
	timeout time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(s.timeout)
	n, err := s.r.Read(p)
	s.timer.Stop()
	return n, err
}

// Fetch returns a reader of the bytes [off, off+n) of e. See the package
// comment for what is checked.
func (u *Upstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	target := u.fileURL(e.Name)
	if off < 0 || n < 0 || off+n > e.Size {
		return nil, fmt.Errorf("GET %s: range [%d, %d) is outside the image's %d bytes", upstream.Redact(target), off, off+n, e.Size)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rng := fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	desc := describe("GET", target, rng)

	ctx, cancel := context.WithCancelCause(ctx)
	stall := u.stallTimer(cancel)
	fail := func(err error) (io.ReadCloser, error) {
		stall.Stop()
		cancel(nil)
		return nil, err
	}
	req, err := newRequest(ctx, "GET", target)
	if err != nil {
		return fail(transportError(ctx, desc, err))
	}
	req.Header.Set("Range", rng)
	req.Header.Set("Accept-Encoding", "identity")
	if ir := ifRange(e); ir != "" {
		req.Header.Set("If-Range", ir)
	}
	resp, err := u.opts.Client.Do(req)
	stall.Stop()
	if err != nil {
		return fail(transportError(ctx, desc, err))
	}
	plan, err := checkReply(resp, e, off, n)
	if err != nil {
		if errors.Is(err, upstream.ErrChanged) {
			u.known.forget(e.Name) // the next crawl asks about it again
		}
		resp.Body.Close()
		return fail(&requestError{req: desc, err: err})
	}
	if plan.skip > 0 {
		u.ignoresRange.Do(func() {
			u.log.Warn("httpdir: the server ignores Range: its replies are whole images", "upstream", u.shown)
		})
	}
	return &rangeReader{
		desc:   desc,
		body:   resp.Body,
		r:      &stallReader{r: resp.Body, timer: stall, timeout: u.opts.StallTimeout},
		ctx:    ctx,
		cancel: cancel,
		skip:   plan.skip,
		left:   plan.yield,
		want:   n,
		whole:  plan.whole,
		size:   e.Size,
		stall:  u.opts.StallTimeout,
	}, nil
}

// ifRange is the validator that makes a server send the whole (new)
// file instead of a range of a version the cache does not know. Only a
// strong ETag may be used; else the Last-Modified date, as RFC 9110
// allows.
func ifRange(e upstream.Entry) string {
	if strings.HasPrefix(e.ETag, `"`) {
		return e.ETag
	}
	if !e.ModTime.IsZero() {
		return e.ModTime.UTC().Format(http.TimeFormat)
	}
	return ""
}

// replyPlan says how to read a checked reply: skip bytes to throw away,
// then yield bytes that are [off, off+yield) of the image. whole: the
// reply is the whole image.
type replyPlan struct {
	skip, yield int64
	whole       bool
}

// checkReply checks that resp carries [off, off+n) of e, or a prefix of it.
func checkReply(resp *http.Response, e upstream.Entry, off, n int64) (replyPlan, error) {
	if err := checkEncoding(resp.Header); err != nil {
		return replyPlan{}, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		return checkPartial(resp, e, off, n)
	case http.StatusOK:
		// Range ignored, or If-Range failed: the whole file. Which of
		// the two only the validators can tell.
		if err := checkSameVersion(resp.Header, e); err != nil {
			return replyPlan{}, err
		}
		if resp.ContentLength >= 0 && resp.ContentLength != e.Size {
			return replyPlan{}, fmt.Errorf("whole file of %d bytes, was %d: %w", resp.ContentLength, e.Size, upstream.ErrChanged)
		}
		return replyPlan{skip: off, yield: n, whole: true}, nil
	case http.StatusRequestedRangeNotSatisfiable:
		return replyPlan{}, fmt.Errorf("%s (Content-Range %q): the image is shorter than it was: %w",
			resp.Status, resp.Header.Get("Content-Range"), upstream.ErrChanged)
	default:
		return replyPlan{}, newStatusError(resp)
	}
}

func checkPartial(resp *http.Response, e upstream.Entry, off, n int64) (replyPlan, error) {
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(strings.ToLower(ct), "multipart/") {
		return replyPlan{}, fmt.Errorf("206 reply is %s; one range was asked for", ct)
	}
	cr := resp.Header.Get("Content-Range")
	first, last, total, err := httpclient.ParseContentRange(cr)
	if err != nil {
		return replyPlan{}, fmt.Errorf("206 reply: %w", err)
	}
	if total >= 0 && total != e.Size {
		return replyPlan{}, fmt.Errorf("Content-Range %q: the image has %d bytes now, was %d: %w", cr, total, e.Size, upstream.ErrChanged)
	}
	if err := checkSameVersion(resp.Header, e); err != nil {
		return replyPlan{}, err
	}
	if first != off || last > off+n-1 {
		return replyPlan{}, fmt.Errorf("Content-Range %q is not the range asked for", cr)
	}
	yield := last - first + 1
	if resp.ContentLength >= 0 && resp.ContentLength != yield {
		return replyPlan{}, fmt.Errorf("Content-Length %d does not match Content-Range %q", resp.ContentLength, cr)
	}
	return replyPlan{yield: yield}, nil
}

// checkSameVersion compares the reply's validators with e's, when both
// are known: the ETag (weakly: W/ aside), else Last-Modified to the
// second (HTTP dates have no finer resolution).
func checkSameVersion(h http.Header, e upstream.Entry) error {
	if etag := h.Get("ETag"); etag != "" && e.ETag != "" {
		if strings.TrimPrefix(etag, "W/") != strings.TrimPrefix(e.ETag, "W/") {
			return fmt.Errorf("ETag is %s, was %s: %w", etag, e.ETag, upstream.ErrChanged)
		}
		return nil
	}
	if lm := h.Get("Last-Modified"); lm != "" && !e.ModTime.IsZero() {
		t, err := http.ParseTime(lm)
		if err == nil && t.Unix() != e.ModTime.Unix() {
			return fmt.Errorf("Last-Modified is %s, was %s: %w", lm, e.ModTime.UTC().Format(http.TimeFormat), upstream.ErrChanged)
		}
	}
	return nil
}

// rangeReader yields the checked bytes of a reply: after skip bytes, left
// bytes; then io.EOF if that is all that was asked (want), else
// ErrShortBody. It never yields more, however long the body.
type rangeReader struct {
	desc   string
	body   io.Closer
	r      io.Reader // the body, behind the stall timer
	ctx    context.Context
	cancel context.CancelCauseFunc

	skip int64 // bytes before the range, to throw away (Range ignored)
	left int64 // bytes of the range still to yield
	got  int64 // bytes yielded
	want int64 // bytes asked for

	whole bool  // the reply is the whole image (200)
	size  int64 // the image's
	read  bool  // Read was called

	stall time.Duration // the longest a splice waits for the connection
}

var (
	_ upstream.WholeReader = (*rangeReader)(nil)
	_ upstream.Splicer     = (*rangeReader)(nil)
)

// CanSplice says whether the reply's body can be spliced into a file: a
// plain-HTTP reply of a known length (httpclient.SpliceTransport).
func (r *rangeReader) CanSplice() bool {
	_, ok := r.body.(httpclient.SpliceBody)
	return ok
}

// SpliceTo moves the next n bytes the reader would yield into f at off
// (upstream.Splicer): the kernel moves them from the connection to the
// file.
func (r *rangeReader) SpliceTo(f *os.File, off, n int64, write func(func() error) error) (int64, error) {
	sb, ok := r.body.(httpclient.SpliceBody)
	if !ok {
		return 0, fmt.Errorf("%s: the reply cannot be spliced", r.desc)
	}
	r.read = true
	if r.skip > 0 {
		k, err := io.CopyN(io.Discard, r.r, r.skip)
		r.skip -= k
		if err != nil {
			return 0, r.fail(err)
		}
	}
	want := min(n, r.left)
	k, err := sb.SpliceTo(f, off, want, r.stall, write)
	r.left -= k
	r.got += k
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return k, &requestError{req: r.desc, err: fmt.Errorf("%w: no byte for %v", upstream.ErrStalled, r.stall)}
	case err != nil:
		return k, r.fail(err)
	case k < n:
		return k, r.short(fmt.Sprintf("the server sent %d of %d bytes", r.got, r.want))
	}
	return k, nil
}

// ReadWhole makes a reply of the whole image yield all of it
// (upstream.WholeReader).
func (r *rangeReader) ReadWhole() bool {
	if !r.whole || r.read {
		return false
	}
	r.skip, r.left, r.want = 0, r.size, r.size
	return true
}

func (r *rangeReader) Read(p []byte) (int, error) {
	r.read = true
	if r.skip > 0 {
		k, err := io.CopyN(io.Discard, r.r, r.skip)
		r.skip -= k
		if err != nil {
			return 0, r.fail(err)
		}
	}
	if r.left == 0 {
		if r.got < r.want {
			return 0, r.short(fmt.Sprintf("the server sent %d of %d bytes", r.got, r.want))
		}
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	k, err := r.r.Read(p)
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
	return transportError(r.ctx, r.desc, err)
}

func (r *rangeReader) short(what string) error {
	return &requestError{req: r.desc, err: fmt.Errorf("%s: %w", what, upstream.ErrShortBody)}
}

func (r *rangeReader) Close() error {
	err := r.body.Close()
	r.cancel(nil)
	return err
}
