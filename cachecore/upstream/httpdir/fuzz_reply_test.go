package httpdir

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// FuzzRangeReply feeds checkReply and rangeReader replies with any
// status, Content-Range, Content-Length, validators and body, for any
// range asked, and checks the one promise of Fetch: whatever comes out
// is bytes [off, off+n) of the image, a prefix at most, never more and
// never from another offset.
func FuzzRangeReply(f *testing.F) {
	const size = 1000
	f.Add(206, "bytes 100-199/1000", "100", `"v1"`, "", int64(100), int64(100), 100)
	f.Add(206, "bytes 100-149/1000", "-1", "", "", int64(100), int64(100), 100)
	f.Add(206, "bytes 101-200/1000", "100", `"v1"`, "", int64(100), int64(100), 100)
	f.Add(206, "bytes 100-199/*", "100", `W/"v1"`, "", int64(100), int64(100), 100)
	f.Add(206, "bytes 0-999/1001", "1000", `"v1"`, "", int64(0), int64(1000), 1000)
	f.Add(200, "", "1000", `"v1"`, "", int64(500), int64(10), 1000)
	f.Add(200, "", "1000", `"v2"`, "", int64(500), int64(10), 1000)
	f.Add(200, "", "-1", "", "Mon, 02 Jan 2006 15:04:05 GMT", int64(0), int64(1000), 400)
	f.Add(416, "bytes */900", "0", "", "", int64(950), int64(50), 0)
	f.Add(503, "", "0", "", "", int64(0), int64(1), 0)
	f.Fuzz(func(t *testing.T, status int, contentRange, contentLength, etag, lastModified string, off, n int64, bodyLen int) {
		if off < 0 || n <= 0 || off+n > size || off+n < 0 || bodyLen < 0 || bodyLen > 4*size {
			return
		}
		e := upstream.Entry{Name: "x.img", Size: size, ETag: `"v1"`, ModTime: time.Unix(1136214245, 0)}
		body := make([]byte, bodyLen)
		for i := range body {
			body[i] = byte(i * 7)
		}
		image := make([]byte, size) // what a 200 carries
		for i := range image {
			image[i] = byte(i * 7)
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, ContentLength: -1}
		if cl, err := strconv.ParseInt(contentLength, 10, 64); err == nil {
			resp.ContentLength = cl
		}
		for k, v := range map[string]string{"Content-Range": contentRange, "ETag": etag, "Last-Modified": lastModified} {
			if v != "" {
				resp.Header.Set(k, v)
			}
		}
		plan, err := checkReply(resp, e, off, n)
		if err != nil {
			return
		}
		switch status {
		case http.StatusPartialContent:
			if plan.skip != 0 || plan.yield < 1 || plan.yield > n {
				t.Fatalf("206 plan %+v for [%d, %d)", plan, off, off+n)
			}
		case http.StatusOK:
			if plan.skip != off || plan.yield != n {
				t.Fatalf("200 plan %+v for [%d, %d)", plan, off, off+n)
			}
			body = image[:min(bodyLen, size)]
		default:
			t.Fatalf("status %d accepted: %+v", status, plan)
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		rr := &rangeReader{desc: "GET x", body: io.NopCloser(nil), r: bytes.NewReader(body), ctx: ctx, cancel: cancel,
			skip: plan.skip, left: plan.yield, want: n}
		got, err := io.ReadAll(rr)
		rr.Close()
		if int64(len(got)) > n {
			t.Fatalf("yielded %d bytes of a %d-byte range", len(got), n)
		}
		if !bytes.Equal(got, image[off:off+int64(len(got))]) && status == http.StatusOK {
			t.Fatalf("200: bytes from the wrong offset")
		}
		if status == http.StatusPartialContent && !bytes.Equal(got, body[:len(got)]) {
			t.Fatalf("206: bytes other than the body's")
		}
		if err == nil && int64(len(got)) != n {
			t.Fatalf("%d of %d bytes and no error", len(got), n)
		}
		if err != nil && !errors.Is(err, upstream.ErrShortBody) {
			t.Fatalf("reader error %v; want ErrShortBody", err)
		}
	})
}
