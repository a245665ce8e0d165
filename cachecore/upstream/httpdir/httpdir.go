// Package httpdir is the upstream of images served from a plain HTTP
// directory: an imgcache origin, or any web server with directory
// listings (nginx autoindex in HTML or JSON, Apache mod_autoindex,
// python3 -m http.server).
//
// # Catalog
//
// An imgcache origin publishes an index of every image with its size,
// mtime and sha256 at <base>.imgcache/index.json (see Index). When the
// index is not there (404), the listings are crawled instead: every
// relative link below a directory is a file, or a subdirectory if it ends
// in a slash, listed in turn. HTML listings give no exact sizes, so each
// file is asked for with HEAD, once: later crawls take what they know
// while nothing says the file changed (known.go), so that a refresh
// costs the listings only. A SHA256SUMS file in any directory gives
// the digests of the files it names. Names go through upstream.CleanName;
// the ones it refuses are logged and left out.
//
// Every body read from the upstream has a cap, and so have the number of
// entries and of listings: a catalog over a cap is an error, never a
// silently truncated catalog, because a missing entry makes the cache
// drop the image.
//
// # Ranges
//
// Fetch asks for one byte range with If-Range, and checks the reply
// before handing out a byte: status, Content-Range, validators, encoding.
// A server that ignores Range still works: its reply, the whole file,
// yields the range asked for (the bytes around it thrown away), or, if
// the caller asks (upstream.WholeReader), all of it.
//
// # Credentials
//
// A URL may carry user:password@, used as basic authentication. It never
// appears in an error, a log line or URL: messages are built here from a
// copy of the URL without user information, never from the errors of
// net/http, which keep the user name.
package httpdir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpclient"
)

// Defaults of Options.
const (
	DefaultConnectTimeout  = 5 * time.Second
	DefaultHeaderTimeout   = 10 * time.Second
	DefaultStallTimeout    = 10 * time.Second
	DefaultMaxListingBytes = 64 << 20
	DefaultMaxSumsBytes    = 4 << 20
	DefaultMaxEntries      = 1_000_000
	DefaultMaxDepth        = upstream.MaxNameDepth
	DefaultMaxListings     = 10_000
	DefaultHeadConcurrency = 8
)

// Options tune an Upstream; the zero value of each field means its default.
type Options struct {
	// Client makes every request. nil: a client tuned for range requests
	// (no transparent gzip, 16 idle connections per host, the timeouts
	// and TLS settings below); see client.go.
	Client *http.Client
	// ConnectTimeout bounds dialing a connection (and its TLS handshake).
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for a reply's headers once the
	// request is sent.
	HeaderTimeout time.Duration
	// CAFile, if set, is a PEM file of the certificate authorities an
	// https upstream's certificate must chain to, instead of the system's.
	CAFile string
	// Insecure turns off TLS certificate verification. Only for tests
	// and labs: anyone on the path can then serve any bytes.
	Insecure bool
	// Credentials are sent with every request to the upstream's own
	// host (never to another host a redirect leads to): "user:password"
	// for basic authentication, or a bearer token (no colon). Empty:
	// the user information of the URL, if any.
	Credentials string
	// Proxy is the URL of a forward proxy (http, https or socks5) every
	// request goes through, whatever its host. Empty: the proxy that
	// HTTP_PROXY, HTTPS_PROXY and NO_PROXY name, if any (which Go never
	// uses for localhost or 127.0.0.0/8).
	Proxy string
	// Logger receives refused names and odd server behaviour. nil: discard.
	Logger *slog.Logger
	// StallTimeout fails a reply that delivers no byte for this long,
	// headers included.
	StallTimeout time.Duration
	// MaxListingBytes caps the body of one directory listing or of the
	// origin index. The default takes a directory of 500,000 images: one
	// of 250,000 is 25 MB as nginx's JSON listing, 30 MB as its HTML.
	MaxListingBytes int64
	// MaxSumsBytes caps the body of one SHA256SUMS file.
	MaxSumsBytes int64
	// MaxEntries caps the number of images in the catalog.
	MaxEntries int
	// MaxDepth caps the components of a name, directories included, and
	// so how deep listings are followed. It cannot exceed
	// upstream.MaxNameDepth, which CleanName enforces anyway.
	MaxDepth int
	// MaxListings caps the directory listings fetched by one List.
	MaxListings int
	// HeadConcurrency caps the HEAD (and SHA256SUMS) requests in flight
	// during one List.
	HeadConcurrency int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&o.StallTimeout, DefaultStallTimeout)
	setDefault(&o.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&o.HeaderTimeout, DefaultHeaderTimeout)
	setDefault(&o.MaxListingBytes, DefaultMaxListingBytes)
	setDefault(&o.MaxSumsBytes, DefaultMaxSumsBytes)
	setDefault(&o.MaxEntries, DefaultMaxEntries)
	setDefault(&o.MaxDepth, DefaultMaxDepth)
	setDefault(&o.MaxListings, DefaultMaxListings)
	setDefault(&o.HeadConcurrency, DefaultHeadConcurrency)
	o.MaxDepth = min(o.MaxDepth, upstream.MaxNameDepth)
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Upstream is an HTTP directory of images.
type Upstream struct {
	base  *url.URL // ends in a slash; may hold credentials: never shown
	opts  Options
	log   *slog.Logger
	shown string         // base without credentials, for messages
	auth  *authTransport // nil when Options.Client was given

	ignoresRange sync.Once    // logs once that the server ignores Range
	known        known        // what HEAD said about files of HTML listings
	lastCrawl    atomic.Int64 // files the last crawl found (the next one's first guess)
}

var (
	_ upstream.Upstream   = (*Upstream)(nil)
	_ upstream.Rememberer = (*Upstream)(nil)
)

// New returns the upstream of the directory at rawURL, an http or https
// URL; a missing trailing slash is added. It makes no request.
func New(rawURL string, opts Options) (*Upstream, error) {
	base, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes the whole URL in its error, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("httpdir: cannot parse the upstream URL: %v", err)
	}
	shown := upstream.Redact(base)
	switch {
	case base.Scheme != "http" && base.Scheme != "https":
		return nil, fmt.Errorf("httpdir: %s: scheme must be http or https", shown)
	case base.Host == "":
		return nil, fmt.Errorf("httpdir: %s: no host", shown)
	case base.RawQuery != "" || base.ForceQuery || base.Fragment != "":
		return nil, fmt.Errorf("httpdir: %s: a directory URL takes no query or fragment", shown)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
		if base.RawPath != "" {
			base.RawPath += "/"
		}
	}
	opts.setDefaults()
	if opts.Credentials == "" && base.User != nil {
		opts.Credentials = base.User.String() // "user:password", still escaped
		if un, err := url.PathUnescape(opts.Credentials); err == nil {
			opts.Credentials = un
		}
	}
	base.User = nil // credentials travel only in the auth transport's header
	var auth *authTransport
	if opts.Client == nil {
		if opts.Client, auth, err = newClient(&opts, base); err != nil {
			return nil, fmt.Errorf("httpdir: %s: %v", shown, err)
		}
	}
	return &Upstream{base: base, opts: opts, log: opts.Logger, shown: upstream.Redact(base), auth: auth}, nil
}

// SetCredentials replaces the credentials sent from now on (a reload
// re-reads them); "" sends none. It fails for an upstream made with its
// own Options.Client, which adds no credentials of ours.
func (u *Upstream) SetCredentials(cred string) error {
	if u.auth == nil {
		return fmt.Errorf("httpdir: %s: credentials cannot change: the upstream uses a client of its own", u.shown)
	}
	u.auth.set(cred)
	return nil
}

// URL returns the URL of the named image, without credentials.
func (u *Upstream) URL(name string) string { return upstream.Redact(u.fileURL(name)) }

// fileURL is the URL of a file: each component of its name escaped.
func (u *Upstream) fileURL(name string) *url.URL {
	t := *u.base
	t.Path = u.base.Path + name
	t.RawPath = u.base.EscapedPath() + escapePath(name)
	return &t
}

// dirURL is the URL of a directory ("" is the base), with its slash.
func (u *Upstream) dirURL(name string) *url.URL {
	if name == "" {
		return u.fileURL("")
	}
	return u.fileURL(name + "/")
}

func escapePath(name string) string {
	comps := strings.Split(name, "/")
	for i, c := range comps {
		comps[i] = url.PathEscape(c)
	}
	return strings.Join(comps, "/")
}

// requestError is the error of one request, named by its method,
// redacted URL and range ("GET http://h/a.img bytes=0-9").
type requestError struct {
	req string
	err error
}

func (e *requestError) Error() string { return e.req + ": " + e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// describe names a request in messages.
func describe(method string, target *url.URL, rng string) string {
	if rng == "" {
		return method + " " + upstream.Redact(target)
	}
	return method + " " + upstream.Redact(target) + " " + rng
}

// transportError turns an error of http.Client.Do (or of making the
// request) into one that names the request but not the credentials:
// *url.Error carries the URL with its user name, so only what it wraps is
// kept.
func transportError(ctx context.Context, req string, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, upstream.ErrStalled) {
		return &requestError{req: req, err: cause}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &requestError{req: req, err: err}
}

// statusError is a reply whose status was not one the caller can use.
// 404 and 410 are upstream.ErrNotFound.
type statusError struct {
	code       int
	status     string
	retryAfter time.Duration // the reply's Retry-After, 0 if none
}

func (e *statusError) HTTPStatus() int           { return e.code }
func (e *statusError) RetryAfter() time.Duration { return e.retryAfter }

func (e *statusError) Error() string { return e.status }

func (e *statusError) Is(target error) bool {
	return target == upstream.ErrNotFound && (e.code == http.StatusNotFound || e.code == http.StatusGone)
}

func newStatusError(resp *http.Response) *statusError {
	status := resp.Status
	if status == "" {
		status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return &statusError{code: resp.StatusCode, status: status, retryAfter: httpclient.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
}

// checkEncoding refuses a body that is not the representation itself: a
// gzip'd file is not its bytes, nor its length the file's size.
func checkEncoding(h http.Header) error {
	if ce := h.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("reply has Content-Encoding %q; only identity is usable", ce)
	}
	return nil
}

// newRequest makes a request with the headers every request here has.
func newRequest(ctx context.Context, method string, target *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "imgcache")
	return req, nil
}

// getBody GETs target and reads its whole body, at most limit bytes;
// what names the body in errors ("directory listing").
func (u *Upstream) getBody(ctx context.Context, target *url.URL, limit int64, what string) ([]byte, http.Header, error) {
	return u.getBodyIf(ctx, target, limit, what, nil)
}

// getBodyIf is getBody, conditional on prev's validators when prev is
// not nil: a 304 reply returns prev's bytes and a nil header.
func (u *Upstream) getBodyIf(ctx context.Context, target *url.URL, limit int64, what string, prev *File) ([]byte, http.Header, error) {
	desc := describe("GET", target, "")
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := u.stallTimer(cancel)
	defer stall.Stop()
	req, err := newRequest(ctx, "GET", target)
	if err != nil {
		return nil, nil, transportError(ctx, desc, err)
	}
	if prev != nil && !prev.Young {
		if prev.ETag != "" {
			req.Header.Set("If-None-Match", prev.ETag)
		} else if !prev.ModTime.IsZero() {
			req.Header.Set("If-Modified-Since", prev.ModTime.UTC().Format(http.TimeFormat))
		}
	}
	resp, err := u.opts.Client.Do(req)
	if err != nil {
		return nil, nil, transportError(ctx, desc, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && prev != nil && !prev.Young && (prev.ETag != "" || !prev.ModTime.IsZero()) {
		return prev.Data, nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &requestError{req: desc, err: newStatusError(resp)}
	}
	if err := checkEncoding(resp.Header); err != nil {
		return nil, nil, &requestError{req: desc, err: err}
	}
	body := &stallReader{r: resp.Body, timer: stall, timeout: u.opts.StallTimeout}
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, nil, transportError(ctx, desc, err)
	}
	if int64(len(b)) > limit {
		return nil, nil, &requestError{req: desc, err: fmt.Errorf("%s is larger than its cap of %d bytes", what, limit)}
	}
	return b, resp.Header, nil
}
