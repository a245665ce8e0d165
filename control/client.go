package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// NotMountedError says that no daemon answers on a cache directory's
// control socket.
type NotMountedError struct {
	CacheDir string
}

func (e *NotMountedError) Error() string {
	return fmt.Sprintf("the cache at %s is not mounted (no daemon on %s)",
		e.CacheDir, filepath.Join(e.CacheDir, SocketName))
}

// Is makes a NotMountedError an ErrNotMounted.
func (e *NotMountedError) Is(target error) bool { return target == ErrNotMounted }

// APIError is an error reply of the daemon.
type APIError struct {
	Status  int    // HTTP status: 404 for an unknown image, ...
	Message string // the daemon's message
}

func (e *APIError) Error() string { return e.Message }

// Is makes an error reply the kind (ErrNotFound, ...) its status says.
func (e *APIError) Is(target error) bool {
	for _, k := range kinds {
		if k.kind == target {
			return e.Status == k.status
		}
	}
	return false
}

// NotFound reports whether err is the daemon's answer for an unknown image.
func NotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Client talks to the daemon of one cache directory.
type Client struct {
	dir string
	hc  *http.Client
}

// Dial connects to the daemon serving cacheDir. If none does (no socket,
// or a socket left by a daemon that died) the error is a
// *NotMountedError.
func Dial(ctx context.Context, cacheDir string) (*Client, error) {
	abs, err := filepath.Abs(cacheDir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(abs, SocketName)
	conn, err := dialUnix(ctx, path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &NotMountedError{CacheDir: abs}
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	conn.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialUnix(ctx, path)
		},
		MaxIdleConns: 2,
	}
	// A redirect would turn a DELETE into a GET: the daemon has none to
	// give, so one is an error reply like any other.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{dir: abs, hc: &http.Client{Transport: tr, CheckRedirect: noRedirect}}, nil
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// ListOptions narrow a listing of images.
type ListOptions struct {
	Prefix string // only the images whose names start with it ("ubuntu/": a directory's)
	Limit  int    // at most this many (the first in name order); 0: all
}

// List yields the images of the catalog in name order as the daemon
// sends them, so that a listing is never held whole. A failure ends the
// sequence with its error.
func (c *Client) List(ctx context.Context, o ListOptions) iter.Seq2[Image, error] {
	return func(yield func(Image, error) bool) {
		q := url.Values{}
		if o.Prefix != "" {
			q.Set("prefix", o.Prefix)
		}
		if o.Limit != 0 {
			q.Set("limit", strconv.Itoa(o.Limit))
		}
		path := "/v1/images"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		resp, err := c.request(ctx, "GET", path)
		if err != nil {
			yield(Image{}, err)
			return
		}
		defer resp.Body.Close()
		fail := func(err error) { yield(Image{}, fmt.Errorf("GET %s: reading the reply: %w", path, err)) }
		dec := json.NewDecoder(resp.Body)
		if err := wantDelim(dec, '['); err != nil {
			fail(err)
			return
		}
		for dec.More() {
			var img Image
			if err := dec.Decode(&img); err != nil {
				fail(err)
				return
			}
			if !yield(img, nil) {
				return
			}
		}
		if err := wantDelim(dec, ']'); err != nil {
			fail(err)
		}
	}
}

// wantDelim reads the next JSON token, which must be d.
func wantDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != d {
		return fmt.Errorf("got %v, want %v", tok, d)
	}
	return nil
}

// Images lists every image of the catalog, held whole; List streams.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	imgs := []Image{}
	for img, err := range c.List(ctx, ListOptions{}) {
		if err != nil {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// Image describes one image.
func (c *Client) Image(ctx context.Context, name string) (Image, error) {
	return call[Image](ctx, c, "GET", "/v1/images/"+escape(name))
}

// Evict drops the cached bytes of one image.
func (c *Client) Evict(ctx context.Context, name string) (EvictResult, error) {
	return call[EvictResult](ctx, c, "DELETE", "/v1/images/"+escape(name))
}

// EvictAll drops the cached bytes of every image that is neither open nor
// pinned.
func (c *Client) EvictAll(ctx context.Context) (EvictResult, error) {
	return call[EvictResult](ctx, c, "DELETE", "/v1/images")
}

// Pin pins (or unpins) an image.
func (c *Client) Pin(ctx context.Context, name string, pinned bool) (Image, error) {
	method := "PUT"
	if !pinned {
		method = "DELETE"
	}
	return call[Image](ctx, c, method, "/v1/pins/"+escape(name))
}

// Pins lists the pin rules.
func (c *Client) Pins(ctx context.Context) ([]Pin, error) {
	return call[[]Pin](ctx, c, "GET", "/v1/pins")
}

// AddPin adds a pin rule of a kind (PinName, PinGlob, PinAlias).
func (c *Client) AddPin(ctx context.Context, kind, pattern string) (Pin, error) {
	return call[Pin](ctx, c, "PUT", "/v1/pins?"+url.Values{kind: {pattern}}.Encode())
}

// RemovePin removes a pin rule.
func (c *Client) RemovePin(ctx context.Context, kind, pattern string) (Pin, error) {
	return call[Pin](ctx, c, "DELETE", "/v1/pins?"+url.Values{kind: {pattern}}.Encode())
}

// Queue queues an image for prefetch.
func (c *Client) Queue(ctx context.Context, name string) (Image, error) {
	return call[Image](ctx, c, "PUT", "/v1/queue/"+escape(name))
}

// Dequeue takes an image off the prefetch queue.
func (c *Client) Dequeue(ctx context.Context, name string) (Image, error) {
	return call[Image](ctx, c, "DELETE", "/v1/queue/"+escape(name))
}

// Queued lists the images queued for prefetch.
func (c *Client) Queued(ctx context.Context) ([]string, error) {
	return call[[]string](ctx, c, "GET", "/v1/queue")
}

// Prune evicts least recently used images now, as the pruner would.
func (c *Client) Prune(ctx context.Context) (PruneResult, error) {
	return call[PruneResult](ctx, c, "POST", "/v1/prune")
}

// Clean reaps stalled and invalid images now, as the cleaner would.
func (c *Client) Clean(ctx context.Context) (CleanResult, error) {
	return call[CleanResult](ctx, c, "POST", "/v1/clean")
}

// Verify checks the cached bytes of one image ("" for all) at rest.
func (c *Client) Verify(ctx context.Context, name string) (VerifyResult, error) {
	path := "/v1/verify"
	if name != "" {
		path += "/" + escape(name)
	}
	return call[VerifyResult](ctx, c, "POST", path)
}

// Stats returns the daemon's state and counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	return call[Stats](ctx, c, "GET", "/v1/stats")
}

// Metrics returns the Prometheus metrics text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.request(ctx, "GET", "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// call sends a request and decodes its JSON reply as a T.
func call[T any](ctx context.Context, c *Client, method, path string) (T, error) {
	var v T
	resp, err := c.request(ctx, method, path)
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("%s %s: reading the reply: %w", method, path, err)
	}
	return v, nil
}

// request sends a request and turns an error reply into an *APIError.
func (c *Client) request(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://imgcache"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon of %s: %w", c.dir, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var ae apiError
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
		ae.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil, &APIError{Status: resp.StatusCode, Message: ae.Error}
}

// escape escapes each segment of an image name for a URL path, keeping
// the slashes between them, so that the daemon gets the name exactly as
// given, to judge it. url.PathEscape leaves dots alone, and the server's
// mux cleans a path before routing it ("/v1/images/../x" is "/v1/x"), so
// the dots of a "." or ".." segment are escaped too; a name with an empty
// segment ("a//b", "/a", "a/") has its slashes escaped, since the mux
// would clean those away as well.
func escape(name string) string {
	segs := strings.Split(name, "/")
	if slices.Contains(segs, "") {
		return url.PathEscape(name)
	}
	for i, s := range segs {
		if s == "." || s == ".." {
			segs[i] = strings.Repeat("%2E", len(s))
		} else {
			segs[i] = url.PathEscape(s)
		}
	}
	return strings.Join(segs, "/")
}
