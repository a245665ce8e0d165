package httpdir

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// newClient makes the client of an upstream at base: verified TLS (or the
// CA file's authorities), the dial and header timeouts of o, no
// transparent gzip (a gzip'd range is not the range), and credentials
// added by the transport for base's host only.
func newClient(o *Options, base *url.URL) (*http.Client, *authTransport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tlsConf.InsecureSkipVerify = o.Insecure
	proxy, err := proxyFunc(o.Proxy)
	if err != nil {
		return nil, nil, err
	}
	dialer := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	auth := &authTransport{scheme: base.Scheme, host: base.Host}
	auth.set(o.Credentials)
	auth.base = &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.ConnectTimeout,
		ResponseHeaderTimeout: o.HeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	return &http.Client{Transport: auth, CheckRedirect: checkRedirect}, auth, nil
}

// proxyFunc picks the proxy of every request: the one named, for every
// host (http.ProxyURL makes no exception for loopback addresses), else
// the environment's. A proxy's user:password@ becomes its
// Proxy-Authorization; it is never shown.
func proxyFunc(raw string) (func(*http.Request) (*url.URL, error), error) {
	if raw == "" {
		return http.ProxyFromEnvironment, nil
	}
	p, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue quotes the URL, password included
		}
		return nil, fmt.Errorf("proxy URL: %v", err)
	}
	switch {
	case p.Scheme != "http" && p.Scheme != "https" && p.Scheme != "socks5" && p.Scheme != "socks5h":
		return nil, fmt.Errorf("proxy %q: scheme must be http, https or socks5", upstream.Redact(p))
	case p.Host == "":
		return nil, fmt.Errorf("proxy %q: no host", upstream.Redact(p))
	case p.Path != "" && p.Path != "/" || p.RawQuery != "" || p.Fragment != "":
		return nil, fmt.Errorf("proxy %q: a proxy URL is scheme://host:port, with no path", upstream.Redact(p))
	}
	return http.ProxyURL(p), nil
}

// checkRedirect follows at most 5 redirects and never from https to http.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect from https to %s refused", req.URL.Scheme)
	}
	return nil
}

func authHeader(cred string) string {
	if strings.Contains(cred, ":") {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(cred))
	}
	return "Bearer " + cred
}

// authTransport adds the Authorization header to requests for the
// upstream's own scheme and host:port, and to no other: a redirect to
// another host (a CDN, or a hostile server's choice) never sees it. The
// header is set on a copy of each request, so net/http's redirect code
// has nothing to copy along. The credentials can change while requests
// run (a reload re-reads them); none: no header.
type authTransport struct {
	base         http.RoundTripper
	scheme, host string
	auth         atomic.Pointer[string] // the header's value; "" for none
}

func (t *authTransport) set(cred string) {
	h := ""
	if cred != "" {
		h = authHeader(cred)
	}
	t.auth.Store(&h)
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	auth := *t.auth.Load()
	if auth == "" || req.URL.Scheme != t.scheme || req.URL.Host != t.host || req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", auth)
	return t.base.RoundTrip(r)
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 || s > 24*3600 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
