package httpdir

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/imgcache/imgcache/cachecore/upstream/httpclient"
)

// newClient makes the client of an upstream at base: the shared
// transport (verified TLS, proxy, timeouts, no transparent gzip; see
// httpclient) and credentials added by the transport for base's host only.
func newClient(o *Options, base *url.URL) (*http.Client, *authTransport, error) {
	tr, err := httpclient.NewSpliceTransport(httpclient.Options{
		ConnectTimeout: o.ConnectTimeout,
		HeaderTimeout:  o.HeaderTimeout,
		CAFile:         o.CAFile,
		Insecure:       o.Insecure,
		Proxy:          o.Proxy,
	})
	if err != nil {
		return nil, nil, err
	}
	auth := &authTransport{base: tr, scheme: base.Scheme, host: base.Host}
	auth.set(o.Credentials)
	return &http.Client{Transport: auth, CheckRedirect: httpclient.CheckRedirect}, auth, nil
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
