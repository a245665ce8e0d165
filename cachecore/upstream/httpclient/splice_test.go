package httpclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

var content = func() []byte {
	b := make([]byte, 3<<20+123)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// server serves content at /a.img (ranges: http.ServeContent) and counts
// its connections.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "a.img", time.Time{}, bytes.NewReader(content))
		}
	}
	srv := httptest.NewUnstartedServer(h)
	var conns atomic.Int32
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func client(t *testing.T) *http.Client {
	t.Helper()
	tr, err := NewSpliceTransport(Options{ConnectTimeout: 5 * time.Second, HeaderTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, url, rng string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func tempFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A range's body goes into a file at an offset, read and spliced in
// turns; the connection serves the next request.
func TestSpliceBodyIntoFile(t *testing.T) {
	srv, conns := server(t, nil)
	c := client(t)
	f := tempFile(t)
	for range 2 {
		resp := get(t, c, srv.URL+"/a.img", "bytes=1000-")
		sb, ok := resp.Body.(SpliceBody)
		if !ok || resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("status %d, body %T", resp.StatusCode, resp.Body)
		}
		head := make([]byte, 10)
		if _, err := io.ReadFull(sb, head); err != nil {
			t.Fatal(err)
		}
		n := int64(len(content) - 1010)
		got, err := sb.SpliceTo(f, 5000, n, time.Second, nil)
		if err != nil || got != n {
			t.Fatalf("SpliceTo = %d, %v; want %d", got, err, n)
		}
		if k, err := sb.Read(head); k != 0 || err != io.EOF {
			t.Fatalf("after the body: %d, %v", k, err)
		}
		resp.Body.Close()
		b := make([]byte, n)
		if _, err := f.ReadAt(b, 5000); err != nil || !bytes.Equal(b, content[1010:]) || !bytes.Equal(head, content[1000:1010]) {
			t.Fatalf("the file holds other bytes (%v)", err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for two requests read to their end", n)
	}
}

// Each write into the file goes through the caller's write hook.
func TestSpliceWriteHook(t *testing.T) {
	srv, _ := server(t, nil)
	resp := get(t, client(t), srv.URL+"/a.img", "")
	defer resp.Body.Close()
	var writes int
	hook := func(do func() error) error { writes++; return do() }
	if _, err := resp.Body.(SpliceBody).SpliceTo(tempFile(t), 0, int64(len(content)), 0, hook); err != nil {
		t.Fatal(err)
	}
	if writes == 0 {
		t.Fatal("no write went through the hook")
	}
}

// A body that ends early, one that stalls, one whose context ends: each
// stops the splice with its error, and the connection is not kept.
func TestSpliceFailures(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(content[:300000])
		w.(http.Flusher).Flush()
		if r.URL.Path == "/short" {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	})
	c := client(t)
	for _, tc := range []struct {
		path string
		ctx  func() (context.Context, context.CancelFunc)
		is   error
	}{
		{"/short", nil, io.ErrUnexpectedEOF},
		{"/stall", nil, os.ErrDeadlineExceeded},
		{"/cancel", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if tc.ctx != nil {
			ctx, cancel = tc.ctx()
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		stallFor := time.Duration(0)
		if tc.path == "/stall" {
			stallFor = 200 * time.Millisecond
		}
		got, err := resp.Body.(SpliceBody).SpliceTo(tempFile(t), 0, 1000000, stallFor, nil)
		resp.Body.Close()
		cancel()
		if got != 300000 || !errors.Is(err, tc.is) {
			t.Errorf("%s: SpliceTo = %d, %v; want 300000 and %v", tc.path, got, err, tc.is)
		}
	}
	resp := get(t, c, srv.URL+"/short", "")
	resp.Body.Close()
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections for four requests after failures, want 4 (none kept)", n)
	}
}

// A body of unknown length (chunked) is read, not spliced; a body closed
// before its end does not leave its connection to the next request.
func TestSpliceOnlyKnownLengths(t *testing.T) {
	srv, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write(content[:10])
			w.(http.Flusher).Flush()
			w.Write(content[10:20])
			return
		}
		http.ServeContent(w, r, "a.img", time.Time{}, bytes.NewReader(content))
	})
	c := client(t)
	resp := get(t, c, srv.URL+"/chunked", "")
	if _, ok := resp.Body.(SpliceBody); ok {
		t.Error("a chunked body offers to splice")
	}
	if b, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(b, content[:20]) {
		t.Errorf("chunked body: %d bytes, %v", len(b), err)
	}
	resp.Body.Close()
	resp = get(t, c, srv.URL+"/a.img", "")
	resp.Body.Read(make([]byte, 100))
	resp.Body.Close()
	resp = get(t, c, srv.URL+"/a.img", "bytes=0-9")
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3: neither a chunked body's nor a body closed early is kept", n)
	}
}

// A kept connection the server has closed meanwhile costs no error: the
// request is made again on a new one.
func TestSpliceStaleConnection(t *testing.T) {
	srv, conns := server(t, nil)
	c := client(t)
	for i := range 2 {
		resp := get(t, c, srv.URL+"/a.img", "bytes=0-99")
		if b, err := io.ReadAll(resp.Body); err != nil || !bytes.Equal(b, content[:100]) {
			t.Fatalf("request %d: %d bytes, %v", i, len(b), err)
		}
		resp.Body.Close()
		srv.CloseClientConnections()
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}
