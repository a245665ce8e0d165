package httpdir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// content of the test image: 100 bytes, none equal to its neighbour.
var content = func() []byte {
	b := make([]byte, 100)
	for i := range b {
		b[i] = byte(i * 3)
	}
	return b
}()

var mtime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// reply writes a 206 with the given Content-Range and body.
func reply(cr string, body []byte, hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		if cr != "" {
			w.Header().Set("Content-Range", cr)
		}
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body)
	}
}

func whole(hdr ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Write(content)
	}
}

// readAll reads r to its end and returns what it yielded and the error
// that ended it (nil for io.EOF).
func readAll(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, r)
	return buf.Bytes(), err
}

func TestFetchChecksReplies(t *testing.T) {
	const off, n = 10, 20
	want := content[off : off+n]
	for _, tc := range []struct {
		name    string
		entry   upstream.Entry // zero: the default
		handler http.HandlerFunc
		yield   []byte // bytes the reader must give before its error
		is      error  // the error Fetch or the reader ends with
		msg     string // and what it says
	}{
		{name: "exact range", handler: reply("bytes 10-29/100", want, "ETag", `"v1"`), yield: want},
		{name: "total unknown", handler: reply("bytes 10-29/*", want), yield: want},
		{name: "range ignored", handler: whole("ETag", `"v1"`), yield: want},
		{name: "range ignored, no validators", handler: whole(), yield: want},
		{name: "range ignored, other version", handler: whole("ETag", `"v2"`), is: upstream.ErrChanged, msg: `ETag is "v2", was "v1"`},
		{name: "range ignored, other length", handler: func(w http.ResponseWriter, r *http.Request) { w.Write(content[:90]) },
			is: upstream.ErrChanged, msg: "whole file of 90 bytes, was 100"},
		{name: "wrong start", handler: reply("bytes 0-19/100", content[:20]), msg: `Content-Range "bytes 0-19/100" is not the range asked for`},
		{name: "past the range", handler: reply("bytes 10-39/100", content[10:40]), msg: "not the range asked for"},
		{name: "wrong total", handler: reply("bytes 10-29/200", want), is: upstream.ErrChanged, msg: "has 200 bytes now, was 100"},
		{name: "no Content-Range", handler: reply("", want), msg: `bad Content-Range ""`},
		{name: "garbage Content-Range", handler: reply("bytes 29-10/100", want), msg: "bad Content-Range"},
		{name: "changed ETag", handler: reply("bytes 10-29/100", want, "ETag", `"v2"`), is: upstream.ErrChanged},
		{name: "weak form of the same ETag", handler: reply("bytes 10-29/100", want, "ETag", `W/"v1"`), yield: want},
		{name: "changed Last-Modified", entry: upstream.Entry{Name: "a.img", Size: 100, ModTime: mtime},
			handler: reply("bytes 10-29/100", want, "Last-Modified", mtime.Add(time.Hour).Format(http.TimeFormat)), is: upstream.ErrChanged},
		{name: "shorter range", handler: reply("bytes 10-19/100", content[10:20]), yield: content[10:20], is: upstream.ErrShortBody, msg: "sent 10 of 20 bytes"},
		{name: "short body", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-29/100")
			w.Header().Set("Content-Length", "20")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(want[:5]) // and the server closes the connection
		}, yield: want[:5], is: upstream.ErrShortBody, msg: "body ended after 5 of 20 bytes"},
		{name: "long body", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 10-29/100")
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush() // chunked: no Content-Length to check
			w.Write(content[10:60])
		}, yield: want},
		{name: "gzip", handler: reply("bytes 10-29/100", want, "Content-Encoding", "gzip"), msg: `Content-Encoding "gzip"`},
		{name: "multipart", handler: reply("bytes 10-29/100", want, "Content-Type", "multipart/byteranges; boundary=x"), msg: "multipart/byteranges"},
		{name: "404", handler: http.NotFound, is: upstream.ErrNotFound, msg: "bytes=10-29: 404 Not Found"},
		{name: "410", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) }, is: upstream.ErrNotFound},
		{name: "500", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }, msg: "bytes=10-29: 500 Internal Server Error"},
		{name: "416", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes */5")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, is: upstream.ErrChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			e := tc.entry
			if e.Name == "" {
				e = upstream.Entry{Name: "a.img", Size: 100, ETag: `"v1"`}
			}
			u := newTestUpstream(t, srv.URL, Options{})
			var got []byte
			r, err := u.Fetch(context.Background(), e, off, n)
			if err == nil {
				got, err = readAll(r)
				r.Close()
			}
			if !bytes.Equal(got, tc.yield) {
				t.Errorf("yielded %v, want %v", got, tc.yield)
			}
			switch {
			case tc.is == nil && tc.msg == "":
				if err != nil {
					t.Errorf("error %v", err)
				}
			case err == nil:
				t.Errorf("no error; want %v %q", tc.is, tc.msg)
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("error %q does not wrap %q", err, tc.is)
			case !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "GET "+srv.URL+"/a.img bytes=10-29: "):
				t.Errorf("error %q; want it to name the request and say %q", err, tc.msg)
			}
		})
	}
}

func TestFetchRequestHeaders(t *testing.T) {
	for _, tc := range []struct {
		entry   upstream.Entry
		ifRange string
	}{
		{upstream.Entry{Name: "d/a b.img", Size: 100, ETag: `"v1"`, ModTime: mtime}, `"v1"`},
		{upstream.Entry{Name: "d/a b.img", Size: 100, ETag: `W/"v1"`, ModTime: mtime}, mtime.Format(http.TimeFormat)},
		{upstream.Entry{Name: "d/a b.img", Size: 100, ModTime: mtime}, mtime.Format(http.TimeFormat)},
		{upstream.Entry{Name: "d/a b.img", Size: 100}, ""},
	} {
		var got http.Header
		var path string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got, path = r.Header.Clone(), r.URL.EscapedPath()
			reply("bytes 0-99/100", content)(w, r)
		}))
		u := newTestUpstream(t, srv.URL+"/base/", Options{})
		r, err := u.Fetch(context.Background(), tc.entry, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		srv.Close()
		if path != "/base/d/a%20b.img" {
			t.Errorf("path %q", path)
		}
		if got.Get("Range") != "bytes=0-99" || got.Get("Accept-Encoding") != "identity" || got.Get("If-Range") != tc.ifRange {
			t.Errorf("%+v: Range %q, Accept-Encoding %q, If-Range %q (want %q)", tc.entry,
				got.Get("Range"), got.Get("Accept-Encoding"), got.Get("If-Range"), tc.ifRange)
		}
	}
}

func TestFetchOutsideImage(t *testing.T) {
	u := newTestUpstream(t, "http://127.0.0.1:1/", Options{})
	e := upstream.Entry{Name: "a.img", Size: 100}
	for _, r := range [][2]int64{{-1, 5}, {90, 11}, {0, -1}} {
		if _, err := u.Fetch(context.Background(), e, r[0], r[1]); err == nil {
			t.Errorf("Fetch(%d, %d) of 100 bytes succeeded", r[0], r[1])
		}
	}
	rc, err := u.Fetch(context.Background(), e, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := readAll(rc); len(b) != 0 || err != nil {
		t.Errorf("empty range: %v, %v", b, err)
	}
}

func TestFetchStall(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-99" {
			select { // no headers at all
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Range", "bytes 10-29/100")
		w.Header().Set("Content-Length", "20")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(content[10:15])
		w.(http.Flusher).Flush()
		select { // then nothing
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	const stall = 200 * time.Millisecond
	u := newTestUpstream(t, srv.URL, Options{StallTimeout: stall})
	e := upstream.Entry{Name: "a.img", Size: 100}

	start := time.Now()
	r, err := u.Fetch(context.Background(), e, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * stall) // a slow reader is not a stalled server
	got, err := readAll(r)
	r.Close()
	if !bytes.Equal(got, content[10:15]) || err == nil || !strings.Contains(err.Error(), "stalled: no byte for 200ms") {
		t.Errorf("stalled body: yielded %v, error %v", got, err)
	}
	if d := time.Since(start); d > 10*stall {
		t.Errorf("took %v to notice a stall of %v", d, stall)
	}

	_, err = u.Fetch(context.Background(), e, 0, 100)
	if err == nil || !strings.Contains(err.Error(), "stalled") || !strings.HasPrefix(err.Error(), "GET "+srv.URL+"/a.img bytes=0-99: ") {
		t.Errorf("stalled headers: error %v", err)
	}
}

func TestFetchCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	u := newTestUpstream(t, srv.URL, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := u.Fetch(ctx, upstream.Entry{Name: "a.img", Size: 100}, 0, 1)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want one wrapping context.Canceled", err)
	}
}

func ExampleUpstream_URL() {
	u, _ := New("https://user:token@mirror.example/ubuntu", Options{})
	fmt.Println(u.URL("jammy/server image.img"))
	// Output: https://mirror.example/ubuntu/jammy/server%20image.img
}

func TestFetchLogsIgnoredRangeOnce(t *testing.T) {
	srv := httptest.NewServer(whole())
	defer srv.Close()
	var logs bytes.Buffer
	u := newTestUpstream(t, srv.URL, Options{Logger: testLogger(&logs)})
	for off := int64(0); off < 3; off++ {
		r, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 100}, off*10, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := readAll(r); err != nil || !bytes.Equal(got, content[off*10:off*10+10]) {
			t.Errorf("Fetch(%d, 10) = %v, %v", off*10, got, err)
		}
		r.Close()
	}
	if c := strings.Count(logs.String(), "ignores Range"); c != 1 {
		t.Errorf("logged %d times that the server ignores Range, want once:\n%s", c, logs.String())
	}
}

// A reply of the whole file yields all of it when asked before the first
// Read (upstream.WholeReader), with the same checks; a range reply, or a
// reader already read, stays the range.
func TestFetchReadWhole(t *testing.T) {
	e := upstream.Entry{Name: "a.img", Size: 100}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		readFst bool   // Read a byte before asking
		whole   bool   // what ReadWhole reports
		yield   []byte // what the reader yields in all
		is      error
	}{
		{name: "whole reply", handler: whole(), whole: true, yield: content},
		{name: "whole reply, read first", handler: whole(), readFst: true, yield: content[40:50]},
		{name: "range reply", handler: reply("bytes 40-49/100", content[40:50]), yield: content[40:50]},
		{name: "whole reply, short", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.Write(content[:70])
		}, whole: true, yield: content[:70], is: upstream.ErrShortBody},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			u := newTestUpstream(t, srv.URL, Options{})
			r, err := u.Fetch(context.Background(), e, 40, 10)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got []byte
			if tc.readFst {
				b := make([]byte, 1)
				n, _ := r.Read(b)
				got = b[:n]
			}
			if w := upstream.ReadWhole(r); w != tc.whole {
				t.Errorf("ReadWhole = %v, want %v", w, tc.whole)
			}
			rest, err := readAll(r)
			got = append(got, rest...)
			if !bytes.Equal(got, tc.yield) {
				t.Errorf("yielded %d bytes %v, want %d", len(got), got, len(tc.yield))
			}
			if tc.is == nil && err != nil || tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
		})
	}
}
