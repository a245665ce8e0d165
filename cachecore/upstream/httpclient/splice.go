package httpclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Splicing. A cache writes every byte it fetches into a file; through
// net/http those bytes are copied from the socket into the process and
// from the process into the file, which made that half of a cold read's
// CPU. For a plain-HTTP GET, SpliceTransport makes the request on a
// connection of its own and returns a body whose bytes can also be moved
// from the socket into a file by the kernel (splice(2), through a pipe),
// never entering the process: SpliceTo. Measured on the shared 2-core
// build machine, 1 GiB from nginx on loopback into a file: 0.9 s of CPU
// against 3.4 s through net/http and pwrite, 2.7x the throughput.
//
// The requests are written and the replies parsed by net/http
// (Request.Write, ReadResponse); only the body is read here. Everything
// else goes to Base: https, requests through a proxy, methods other than
// GET. Connections are kept for the next request once a body has been
// read to its end. Redirects and credentials stay above, with the
// http.Client and its RoundTrippers.

// SpliceTransport is the http.RoundTripper of a client whose plain-HTTP
// GET bodies can be spliced (SpliceBody).
type SpliceTransport struct {
	Base          *http.Transport // everything else; its Proxy decides what is proxied
	Dialer        *net.Dialer
	HeaderTimeout time.Duration // 0: none

	mu   sync.Mutex // protects the following
	idle map[string][]*spliceConn
}

// maxIdlePerHost and idleTimeout bound the connections kept.
const (
	maxIdlePerHost = 16
	idleTimeout    = 90 * time.Second
)

// NewSpliceTransport makes the transport of an upstream (NewTransport)
// with plain-HTTP GETs spliceable.
func NewSpliceTransport(o Options) (*SpliceTransport, error) {
	base, err := NewTransport(o)
	if err != nil {
		return nil, err
	}
	return &SpliceTransport{
		Base:          base,
		Dialer:        &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second},
		HeaderTimeout: o.HeaderTimeout,
	}, nil
}

// SpliceBody is a response body whose bytes can go straight from the
// connection into a file.
type SpliceBody interface {
	io.ReadCloser
	// SpliceTo moves the next n bytes of the body into f at off. The
	// connection may wait at most stall for each step (0: no limit);
	// then it fails with os.ErrDeadlineExceeded. Each write into f is
	// made through write, if not nil (upstream.Splicer). It returns how
	// many bytes it moved; fewer than n come with an error
	// (io.ErrUnexpectedEOF if the body ended).
	SpliceTo(f *os.File, off, n int64, stall time.Duration, write func(func() error) error) (int64, error)
}

type spliceConn struct {
	conn *net.TCPConn
	br   *bufio.Reader
	used time.Time
}

// RoundTrip makes the request on a connection of the transport's own if
// it is a plain-HTTP GET not sent through a proxy, else through Base.
func (t *SpliceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.Method != http.MethodGet || req.Body != nil && req.Body != http.NoBody {
		return t.Base.RoundTrip(req)
	}
	if t.Base.Proxy != nil {
		if p, err := t.Base.Proxy(req); err != nil || p != nil {
			return t.Base.RoundTrip(req)
		}
	}
	resp, err := t.roundTrip(req, true)
	if errors.Is(err, errStale) { // an idle connection the server had closed
		resp, err = t.roundTrip(req, false)
	}
	return resp, err
}

// errStale: a kept connection failed before any byte of a reply came.
var errStale = errors.New("kept connection closed")

func (t *SpliceTransport) roundTrip(req *http.Request, reuse bool) (*http.Response, error) {
	ctx := req.Context()
	host := canonicalAddr(req)
	pc, reused := t.getIdle(host, reuse)
	if pc == nil {
		c, err := t.Dialer.DialContext(ctx, "tcp", host)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			return nil, fmt.Errorf("dial %s: not a TCP connection", host)
		}
		pc = &spliceConn{conn: tc, br: bufio.NewReaderSize(tc, 64<<10)}
	}
	stop := context.AfterFunc(ctx, func() { pc.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if t.HeaderTimeout > 0 {
		pc.conn.SetDeadline(time.Now().Add(t.HeaderTimeout))
	} else {
		pc.conn.SetDeadline(time.Time{})
	}
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	bw := bufio.NewWriter(pc.conn)
	if err := req.Write(bw); err != nil {
		return fail(stale(reused, err))
	}
	if err := bw.Flush(); err != nil {
		return fail(stale(reused, err))
	}
	if _, err := pc.br.Peek(1); err != nil {
		if os.IsTimeout(err) && ctx.Err() == nil {
			return fail(headerTimeout{})
		}
		return fail(stale(reused, err))
	}
	resp, err := http.ReadResponse(pc.br, req)
	if err != nil {
		return fail(err)
	}
	pc.conn.SetDeadline(time.Time{})
	if ctx.Err() != nil {
		resp.Body.Close()
		return fail(ctx.Err())
	}
	if resp.ContentLength < 0 || len(resp.TransferEncoding) > 0 || resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent {
		// Not a body of a known length: read it as net/http does, and
		// let the connection go with it.
		resp.Body = &closingBody{ReadCloser: resp.Body, close: func() { stop(); pc.conn.Close() }}
		return resp, nil
	}
	resp.Body = &splicedBody{t: t, pc: pc, host: host, ctx: ctx, stop: stop, left: resp.ContentLength,
		keep: !resp.Close && !req.Close}
	return resp, nil
}

// headerTimeout is net/http's error when no reply came within the header
// timeout: a timeout (net.Error).
type headerTimeout struct{}

func (headerTimeout) Error() string   { return "timeout awaiting response headers" }
func (headerTimeout) Timeout() bool   { return true }
func (headerTimeout) Temporary() bool { return true }

func stale(reused bool, err error) error {
	if reused {
		return fmt.Errorf("%w: %v", errStale, err)
	}
	return err
}

// canonicalAddr is the request's host:port.
func canonicalAddr(req *http.Request) string {
	if port := req.URL.Port(); port != "" {
		return req.URL.Host
	}
	return net.JoinHostPort(req.URL.Hostname(), "80")
}

// getIdle takes a kept connection to host, if reuse and there is one.
func (t *SpliceTransport) getIdle(host string, reuse bool) (*spliceConn, bool) {
	if !reuse {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for cs := t.idle[host]; len(cs) > 0; cs = t.idle[host] {
		pc := cs[len(cs)-1]
		t.idle[host] = cs[:len(cs)-1]
		if time.Since(pc.used) < idleTimeout {
			return pc, true
		}
		pc.conn.Close()
	}
	return nil, false
}

// putIdle keeps a connection whose last reply was read to its end.
func (t *SpliceTransport) putIdle(host string, pc *spliceConn) {
	pc.used = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = make(map[string][]*spliceConn)
	}
	if len(t.idle[host]) >= maxIdlePerHost {
		pc.conn.Close()
		return
	}
	t.idle[host] = append(t.idle[host], pc)
}

// CloseIdleConnections closes the kept connections (http.Client calls it).
func (t *SpliceTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, cs := range idle {
		for _, pc := range cs {
			pc.conn.Close()
		}
	}
	t.Base.CloseIdleConnections()
}

// closingBody closes the connection with the body: first, since the
// Close of a body of ReadResponse reads it to its end, which for an
// endless reply is never.
type closingBody struct {
	io.ReadCloser
	close func()
	once  sync.Once
}

func (b *closingBody) Close() error {
	b.once.Do(b.close)
	b.ReadCloser.Close()
	return nil
}

// splicedBody is a body of a known length, read from the connection's
// buffer and then the connection itself.
type splicedBody struct {
	t    *SpliceTransport
	pc   *spliceConn
	host string
	ctx  context.Context
	stop func() bool // ends the context's watch of the connection
	left int64       // bytes of the body not yet read
	keep bool        // the connection may serve another request after this body
	err  error       // the body failed: it yields this from now on
	pipe [2]int      // for splicing; {0, 0} until the first SpliceTo
	done bool
}

var _ SpliceBody = (*splicedBody)(nil)

func (b *splicedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.finish()
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.pc.br.Read(p)
	b.left -= int64(n)
	switch {
	case err == nil:
	case b.ctx.Err() != nil:
		err = b.ctx.Err()
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.fail(err)
	}
	return n, err
}

func (b *splicedBody) SpliceTo(f *os.File, off, n int64, stall time.Duration, write func(func() error) error) (int64, error) {
	if b.err != nil {
		return 0, b.err
	}
	if write == nil {
		write = func(do func() error) error { return do() }
	}
	want := min(n, b.left)
	moved := int64(0)
	if k := int64(b.pc.br.Buffered()); k > 0 { // what came with the headers
		p, _ := b.pc.br.Peek(int(min(k, want)))
		if err := write(func() error { _, err := f.WriteAt(p, off); return err }); err != nil {
			return 0, err // the body is fine; the file is not
		}
		b.pc.br.Discard(len(p))
		moved += int64(len(p))
		b.left -= int64(len(p))
	}
	if moved < want {
		k, err := b.splice(f, off+moved, want-moved, stall, write)
		moved += k
		b.left -= k
		if err != nil {
			b.fail(err)
			return moved, err
		}
	}
	if moved < n {
		b.fail(io.ErrUnexpectedEOF)
		return moved, io.ErrUnexpectedEOF
	}
	return moved, nil
}

// splice moves n bytes from the socket into f at off, through a pipe.
func (b *splicedBody) splice(f *os.File, off, n int64, stall time.Duration, write func(func() error) error) (int64, error) {
	if b.pipe == [2]int{} {
		if err := unix.Pipe2(b.pipe[:], unix.O_CLOEXEC); err != nil {
			b.pipe = [2]int{}
			return 0, err
		}
		unix.FcntlInt(uintptr(b.pipe[1]), unix.F_SETPIPE_SZ, 1<<20) // fewer steps if allowed; 64 KiB if not
	}
	sock, err := b.pc.conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	file, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var moved int64
	for moved < n {
		if stall > 0 {
			b.pc.conn.SetReadDeadline(time.Now().Add(stall))
		}
		if err := b.ctx.Err(); err != nil { // after the deadline's reset: a cancel from now on is seen
			return moved, err
		}
		var k int64
		var serr error
		err := sock.Read(func(fd uintptr) bool {
			k, serr = unix.Splice(int(fd), nil, b.pipe[1], nil, int(min(n-moved, 1<<20)), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return serr != unix.EAGAIN
		})
		switch {
		case err != nil && b.ctx.Err() != nil:
			return moved, b.ctx.Err()
		case err != nil:
			return moved, err
		case serr == unix.EINTR:
			continue
		case serr != nil:
			return moved, serr
		case k == 0:
			return moved, io.ErrUnexpectedEOF
		}
		for k > 0 { // into the file: blocking, the pipe holds what is due
			var m int64
			var werr error
			err := write(func() error {
				return file.Write(func(fd uintptr) bool {
					m, werr = unix.Splice(b.pipe[0], nil, int(fd), &off, int(k), unix.SPLICE_F_MOVE)
					return werr != unix.EAGAIN
				})
			})
			if err == nil && werr == unix.EINTR {
				continue
			}
			if err == nil {
				err = werr
			}
			if err == nil && m == 0 {
				err = io.ErrShortWrite
			}
			if err != nil {
				return moved, err
			}
			k -= m
			moved += m
		}
	}
	if stall > 0 {
		b.pc.conn.SetReadDeadline(time.Time{})
	}
	return moved, nil
}

// fail ends the body with err; its connection is not kept.
func (b *splicedBody) fail(err error) {
	if b.err == nil {
		b.err = err
	}
}

// finish keeps the connection once the body was read to its end.
func (b *splicedBody) finish() {
	if b.done {
		return
	}
	b.done = true
	b.closePipe()
	if !b.stop() || b.err != nil || b.left != 0 || !b.keep { // the context ended, or the body did not
		b.pc.conn.Close()
		return
	}
	b.t.putIdle(b.host, b.pc)
}

func (b *splicedBody) closePipe() {
	if b.pipe != [2]int{} {
		unix.Close(b.pipe[0])
		unix.Close(b.pipe[1])
		b.pipe = [2]int{}
	}
}

func (b *splicedBody) Close() error {
	if b.left != 0 && b.err == nil {
		b.err = errors.New("body closed")
	}
	b.finish()
	return nil
}
