// Package httpclient holds what every HTTP-speaking upstream (httpdir,
// oci, simplestreams) needs alike: the transport of its requests (TLS,
// proxy, timeouts; for plain HTTP, bodies that can be spliced into a file:
// splice.go), the redirect policy, and the parsing of the reply headers a
// range fetch depends on (Content-Range, Retry-After).
// Authentication is not here: each protocol adds its own, for its own
// hosts, on top of this transport.
package httpclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Options of a transport; zero durations mean no limit.
type Options struct {
	// ConnectTimeout bounds dialing a connection and its TLS handshake.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for a reply's headers once the
	// request is sent.
	HeaderTimeout time.Duration
	// CAFile, if set, is a PEM file of the certificate authorities a
	// server's certificate must chain to, instead of the system's.
	CAFile string
	// Insecure turns off TLS certificate verification (tests and labs).
	Insecure bool
	// Proxy is the URL of a forward proxy (http, https or socks5) for
	// every request, loopback hosts included. Empty: the environment's
	// (HTTP_PROXY, HTTPS_PROXY, NO_PROXY).
	Proxy string
}

// NewTransport makes the transport of an upstream: verified TLS (or the
// CA file's authorities), the proxy, the dial and header timeouts, and no
// transparent gzip (a gzip'd range is not the range).
func NewTransport(o Options) (*http.Transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tlsConf.InsecureSkipVerify = o.Insecure
	proxy, err := proxyFunc(o.Proxy)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: o.ConnectTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
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
	}, nil
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

// CheckRedirect is the redirect policy of http.Client: at most 5
// redirects, never from https to http.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect from https to %s refused", req.URL.Scheme)
	}
	return nil
}
