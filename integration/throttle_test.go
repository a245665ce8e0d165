package integration

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// throttleProxy is an in-process proxy in front of a real upstream that
// sends image bodies at a limited rate (shared by all requests) and counts,
// per path, the body bytes it delivered and the requests still running.
// A slow upstream gives a test time to act in the middle of a fetch.
type throttleProxy struct {
	url  string
	rate int64 // bytes per second

	mu     sync.Mutex // protects the following
	next   time.Time  // when the rate allows the next write
	sent   map[string]int64
	active map[string]int
}

func startThrottleProxy(t *testing.T, target string, rate int64) *throttleProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &throttleProxy{rate: rate, sent: map[string]int64{}, active: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a killed daemon's requests end in errors by design
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/")
		if r.Header.Get("Range") == "" {
			rp.ServeHTTP(w, r)
			return
		}
		p.mu.Lock()
		p.active[path]++
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.active[path]--
			p.mu.Unlock()
		}()
		rp.ServeHTTP(&throttledWriter{ResponseWriter: w, p: p, path: path}, r)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL + "/"
	return p
}

// delivered is the body bytes sent for path so far.
func (p *throttleProxy) delivered(path string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[path]
}

// idle waits until no request for path is running.
func (p *throttleProxy) idle(t *testing.T, path string) {
	t.Helper()
	waitUntil(t, "requests for "+path+" to end", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.active[path] == 0
	})
}

type throttledWriter struct {
	http.ResponseWriter
	p    *throttleProxy
	path string
}

func (w *throttledWriter) Write(b []byte) (int, error) {
	p := w.p
	p.mu.Lock()
	start := time.Now()
	if p.next.After(start) {
		start = p.next
	}
	p.next = start.Add(time.Duration(int64(len(b)) * int64(time.Second) / p.rate))
	due := p.next
	p.mu.Unlock()
	time.Sleep(time.Until(due))
	n, err := w.ResponseWriter.Write(b)
	p.mu.Lock()
	p.sent[w.path] += int64(n)
	p.mu.Unlock()
	return n, err
}

func (w *throttledWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
