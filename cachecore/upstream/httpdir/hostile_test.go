package httpdir

import (
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

// endless writes zeros until the client goes away.
func endless(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, 32<<10)
	for r.Context().Err() == nil {
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
}

func TestEndlessRangeBodyIsCutOff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-99/1000") // and no Content-Length
		w.WriteHeader(http.StatusPartialContent)
		endless(w, r)
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{})
	body, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 1000}, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	n, err := io.Copy(io.Discard, body)
	if err != nil || n != 100 {
		t.Fatalf("read %d bytes (err %v) of an endless body, want exactly the 100 asked for", n, err)
	}
}

func TestEndlessListingIsCutOff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(endless))
	defer srv.Close()
	u, _ := New(srv.URL, Options{MaxListingBytes: 1 << 20})
	_, err := u.List(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cap") {
		t.Fatalf("endless listing: %v, want the cap's error", err)
	}
}

func TestGzipListingIsNotInflated(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "" && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			t.Errorf("gzip asked for: %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Encoding", "gzip") // a bomb, were it inflated
		w.Write([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"))
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{})
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "Content-Encoding") {
		t.Fatalf("gzip listing: %v, want a refusal of its Content-Encoding", err)
	}
}

func TestRetryAfterIsReported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "later", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{})
	_, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 10}, 0, 10)
	if !upstream.Temporary(err) || upstream.RetryAfterOf(err) != 7*time.Second {
		t.Fatalf("503 with Retry-After 7: %v (temporary %v, after %v)", err, upstream.Temporary(err), upstream.RetryAfterOf(err))
	}
	var hs upstream.HTTPStatus
	if !errors.As(err, &hs) || hs.HTTPStatus() != 503 {
		t.Fatalf("status not reported: %v", err)
	}
}

func TestCredentialsStayWithTheirHost(t *testing.T) {
	seen := make(chan string, 4)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- "other:" + r.Header.Get("Authorization")
		w.Header().Set("Content-Range", "bytes 0-9/10")
		w.WriteHeader(http.StatusPartialContent)
		w.Write([]byte("0123456789"))
	}))
	defer other.Close()
	home := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- "home:" + r.Header.Get("Authorization")
		http.Redirect(w, r, other.URL+"/a.img", http.StatusFound)
	}))
	defer home.Close()
	for _, c := range []struct{ url, cred string }{
		{strings.Replace(home.URL, "http://", "http://user:pw@", 1), ""},
		{home.URL, "user:pw"},
		{home.URL, "tok3n"},
	} {
		u, err := New(c.url, Options{Credentials: c.cred})
		if err != nil {
			t.Fatal(err)
		}
		body, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 10}, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		body.Close()
		h, o := <-seen, <-seen
		if !strings.HasPrefix(h, "home:Basic ") && h != "home:Bearer tok3n" {
			t.Errorf("%s %q: the upstream saw %q", c.url, c.cred, h)
		}
		if o != "other:" {
			t.Errorf("%s %q: credentials crossed the redirect: %q", c.url, c.cred, o)
		}
		if strings.Contains(u.URL("a.img"), "pw") || strings.Contains(fmt.Sprint(u.base), "pw") {
			t.Errorf("credentials kept in the URL: %s", u.URL("a.img"))
		}
	}
}

func TestHeaderTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never a header
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{HeaderTimeout: 100 * time.Millisecond, StallTimeout: time.Minute})
	start := time.Now()
	_, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 10}, 0, 10)
	t.Logf("no headers: failed after %v: %v", time.Since(start), err)
	if err == nil || !strings.Contains(err.Error(), "headers") || !upstream.Temporary(err) {
		t.Fatalf("err = %v (temporary %v), want a retryable header timeout", err, upstream.Temporary(err))
	}
}

func TestStalledBodyIsTemporary(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-9/10")
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		w.Write([]byte("01234"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	u, _ := New(srv.URL, Options{StallTimeout: 100 * time.Millisecond})
	body, err := u.Fetch(context.Background(), upstream.Entry{Name: "a.img", Size: 10}, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	n, err := io.Copy(io.Discard, body)
	if n != 5 || !errors.Is(err, upstream.ErrStalled) || !upstream.Temporary(err) {
		t.Fatalf("read %d bytes, err %v; want 5 then a retryable stall", n, err)
	}
}
