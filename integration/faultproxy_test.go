package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgcache/imgcache/origin"
)

// faultUpstream is the project's origin server (package origin, run in
// this process on 127.0.0.1) behind a handler that breaks the replies
// for chosen images on purpose. Everything else (the index, listings,
// HEAD, other images) passes through untouched.
//
//	u := startFaultUpstream(t, root)
//	m := startMount(t, u.url, "")
//	u.inject("a.img", fault{kind: truncateBody, after: 100 << 10})
//	... read, expect an error ...
//	u.clear("a.img")
//	... read, expect the right bytes ...
//
// A fault applies to GET requests of the image's file; with times > 0 it
// applies to that many of them (for corruptByte: replies that carry the
// byte) and then the image is served normally again.
type faultUpstream struct {
	url  string // base URL, ending in a slash
	root string // the directory served

	srv    *httptest.Server
	origin *origin.Server

	trickling atomic.Int64 // trickleBody replies being sent now

	mu      sync.Mutex        // protects the following
	faults  map[string]*fault // by image name
	gets    map[string]int    // GET requests seen, by image name
	release chan struct{}     // closed to end the stalls in progress
}

type faultKind int

const (
	corruptByte       faultKind = iota // flip the lowest bit of the byte at image offset at
	truncateBody                       // end the body after `after` bytes (the connection closes)
	resetBody                          // after `after` bytes, reset the TCP connection (RST)
	ignoreRange                        // answer 200 with the whole file, as if Range were unknown
	wrongContentRange                  // answer 206 for the range one byte off, Content-Range saying so
	stallBody                          // after `after` bytes, send nothing until the client gives up or clear
	statusError                        // answer status (e.g. 503) without a body
	trickleBody                        // after `after` bytes, one byte every `every` until the client gives up or clear
)

// fault is one way of breaking replies.
type fault struct {
	kind   faultKind
	at     int64         // corruptByte: image offset of the byte to flip
	after  int64         // truncateBody, resetBody, stallBody: body bytes sent first
	status int           // statusError: the status to answer
	every  time.Duration // trickleBody: the pause before each byte
	times  int           // replies to break, then pass through; 0: until clear
}

// startFaultUpstream serves root on 127.0.0.1 until the test ends.
func startFaultUpstream(t *testing.T, root string) *faultUpstream {
	t.Helper()
	o, err := origin.New(root, origin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u := &faultUpstream{root: root, origin: o, faults: map[string]*fault{}, gets: map[string]int{},
		release: make(chan struct{})}
	u.srv = httptest.NewServer(u)
	u.url = u.srv.URL + "/"
	t.Cleanup(func() {
		u.clearAll()
		u.srv.CloseClientConnections()
		u.srv.Close()
		o.Close()
	})
	return u
}

// inject breaks the replies for image name (a path below root) as f says,
// replacing any fault set before.
func (u *faultUpstream) inject(name string, f fault) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.faults[name] = &f
}

// clear serves image name normally again and ends its stalls.
func (u *faultUpstream) clear(name string) {
	u.mu.Lock()
	delete(u.faults, name)
	u.mu.Unlock()
	u.endStalls()
}

func (u *faultUpstream) clearAll() {
	u.mu.Lock()
	clear(u.faults)
	u.mu.Unlock()
	u.endStalls()
}

func (u *faultUpstream) endStalls() {
	u.mu.Lock()
	defer u.mu.Unlock()
	close(u.release)
	u.release = make(chan struct{})
}

// getCount is how many GET requests of image name arrived so far.
func (u *faultUpstream) getCount(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets[name]
}

// replace gives image name new content, as a publisher would: a new file
// renamed over the old one (new inode, mtime, ETag and digest).
func (u *faultUpstream) replace(t *testing.T, name string, data []byte) {
	t.Helper()
	p := filepath.Join(u.root, name)
	tmp := filepath.Join(filepath.Dir(p), ".new-"+filepath.Base(p))
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// take returns the fault to apply to this request, if any, counting it
// against times.
func (u *faultUpstream) take(r *http.Request) (fault, <-chan struct{}, bool) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	u.mu.Lock()
	defer u.mu.Unlock()
	if r.Method != http.MethodGet {
		return fault{}, nil, false
	}
	u.gets[name]++
	f := u.faults[name]
	if f == nil {
		return fault{}, nil, false
	}
	if f.kind == corruptByte {
		first, last, ok := requestedRange(r.Header.Get("Range"))
		if ok && (f.at < first || f.at > last) {
			return fault{}, nil, false
		}
	}
	if f.times > 0 {
		if f.times--; f.times == 0 {
			delete(u.faults, name)
		}
	}
	return *f, u.release, true
}

func (u *faultUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, release, ok := u.take(r)
	if !ok {
		u.origin.ServeHTTP(w, r)
		return
	}
	switch f.kind {
	case trickleBody:
		u.trickling.Add(1)
		defer u.trickling.Add(-1)
	case statusError:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(f.status)
		fmt.Fprintf(w, "injected %d\n", f.status)
		return
	case ignoreRange:
		r.Header.Del("Range")
		r.Header.Del("If-Range")
	case wrongContentRange:
		if first, last, ok := requestedRange(r.Header.Get("Range")); ok {
			shift := int64(1)
			if first > 0 {
				shift = -1
			}
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first+shift, last+shift))
		}
	}
	u.origin.ServeHTTP(&faultWriter{ResponseWriter: w, f: f, release: release, done: r.Context().Done()}, r)
}

// faultWriter applies a fault to the body the origin writes.
type faultWriter struct {
	http.ResponseWriter
	f       fault
	release <-chan struct{}
	done    <-chan struct{} // the request's end
	start   int64           // image offset of the first body byte
	sent    int64           // body bytes passed on
	broken  bool
}

var errInjected = errors.New("fault injected")

func (w *faultWriter) WriteHeader(code int) {
	if code == http.StatusPartialContent {
		cr := w.Header().Get("Content-Range")
		if a, _, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "-"); ok {
			w.start, _ = strconv.ParseInt(a, 10, 64)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if w.broken {
		return 0, errInjected
	}
	switch w.f.kind {
	case corruptByte:
		if i := w.f.at - w.start - w.sent; i >= 0 && i < int64(len(p)) {
			q := append([]byte(nil), p...)
			q[i] ^= 1
			p = q
		}
	case trickleBody:
		return w.trickle(p)
	case truncateBody, resetBody, stallBody:
		if w.sent+int64(len(p)) > w.f.after {
			k, _ := w.ResponseWriter.Write(p[:w.f.after-w.sent])
			w.sent += int64(k)
			w.broken = true
			w.breakNow()
			return k, errInjected
		}
	}
	k, err := w.ResponseWriter.Write(p)
	w.sent += int64(k)
	return k, err
}

// breakNow ends the reply the way the fault says, once `after` bytes
// are out.
func (w *faultWriter) breakNow() {
	rc := http.NewResponseController(w.ResponseWriter)
	rc.Flush()
	switch w.f.kind {
	case resetBody:
		conn, _, err := rc.Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close sends RST
		}
		conn.Close()
	case stallBody:
		select {
		case <-w.release:
		case <-w.done:
		}
	}
	// truncateBody: the handler returns short of Content-Length, and
	// net/http closes the connection.
}

// trickle passes on the bytes up to `after` at once, then one byte every
// `every`, all of them right, until the request ends (an error) or the
// fault is cleared (the rest at once).
func (w *faultWriter) trickle(p []byte) (int, error) {
	rc := http.NewResponseController(w.ResponseWriter)
	written := 0
	for written < len(p) {
		k := len(p) - written
		if w.sent >= w.f.after {
			rc.Flush()
			select {
			case <-w.release:
			case <-w.done:
				return written, errInjected
			case <-time.After(w.f.every):
				k = 1
			}
		} else {
			k = int(min(int64(k), w.f.after-w.sent))
		}
		n, err := w.ResponseWriter.Write(p[written : written+k])
		written += n
		w.sent += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// requestedRange parses a Range header of one range "bytes=a-b".
func requestedRange(h string) (first, last int64, ok bool) {
	a, b, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	if !ok {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	return first, last, err1 == nil && err2 == nil
}

var _ io.Writer = (*faultWriter)(nil)
