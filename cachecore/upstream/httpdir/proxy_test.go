package httpdir

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// TestProxyCarriesEveryRequest: with Options.Proxy, the listing and the
// range requests go to the proxy (as absolute URIs, loopback or not), with
// the proxy's credentials in Proxy-Authorization and the upstream's in
// Authorization.
func TestProxyCarriesEveryRequest(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.RequestURI+" "+r.Header.Get("Proxy-Authorization")+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		switch r.URL.Path {
		case "/imgs/.imgcache/index.json":
			io.WriteString(w, `{"version":1,"images":[{"name":"a.img","size":100}]}`)
		case "/imgs/a.img":
			w.Header().Set("Content-Range", "bytes 10-19/100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(content[10:20])
		default:
			http.NotFound(w, r)
		}
	}))
	defer proxy.Close()
	u, err := New("http://images.example:8080/imgs/", Options{
		Proxy:       "http://fleet:secret@" + strings.TrimPrefix(proxy.URL, "http://"),
		Credentials: "user:pw",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	es, err := u.List(ctx)
	if err != nil || len(es) != 1 {
		t.Fatalf("List through the proxy: %v, %v", es, err)
	}
	rc, err := u.Fetch(ctx, es[0], 10, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(rc)
	rc.Close()
	if err != nil || string(got) != string(content[10:20]) {
		t.Fatalf("Fetch through the proxy: %q, %v", got, err)
	}
	proxyAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("fleet:secret"))
	upAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:pw"))
	want := []string{
		"GET http://images.example:8080/imgs/.imgcache/index.json " + proxyAuth + " " + upAuth,
		"GET http://images.example:8080/imgs/a.img " + proxyAuth + " " + upAuth,
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the proxy saw:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestProxyLoopback: Go's environment proxy skips loopback hosts, but a
// proxy named in Options is used for them too (the fleet tests rely on it).
func TestProxyLoopback(t *testing.T) {
	var hits atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer proxy.Close()
	u, err := New("http://127.0.0.1:1/", Options{Proxy: proxy.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = u.List(context.Background())
	if !strings.Contains(err.Error(), "404") || hits.Load() == 0 {
		t.Fatalf("List of a loopback upstream: %v after %d proxy requests; want the proxy's 404", err, hits.Load())
	}
}

func TestProxyBadURL(t *testing.T) {
	for _, tc := range []struct{ proxy, want string }{
		{"ftp://p:21", `proxy "ftp://p:21": scheme must be http, https or socks5`},
		{"p:3128", `scheme must be`},
		{"http://", `proxy "http:": no host`},
		{"http://u:hunter2@p:3128/path", `proxy "http://p:3128/path": a proxy URL is scheme://host:port, with no path`},
		{"http://u:hunter2@p:3128/%zz", `proxy URL: invalid URL escape "%zz"`},
	} {
		_, err := New("http://images.example/", Options{Proxy: tc.proxy})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("proxy %q: error %v; want one containing %q", tc.proxy, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("proxy %q: the error shows the password: %v", tc.proxy, err)
		}
	}
}
