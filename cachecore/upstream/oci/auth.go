package oci

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// The registry's authentication, written here rather than taken from
// oras-go's auth.Client because that client keeps a token until a
// request is refused with it (it has no idea of expires_in), so a token
// would be refreshed only by a failed request, and it gives no way to
// bound or name a token endpoint that hangs. The protocol is the same:
// https://distribution.github.io/distribution/spec/auth/token/.

// Bounds of the token flow.
const (
	maxTokenReply   = 128 << 10 // a token reply is a few KiB (oras-go allows 128 KiB too)
	defaultTokenTTL = 60 * time.Second
	maxTokenTTL     = 24 * time.Hour
)

// credential is what the user gave: a user and password, or a token.
type credential struct {
	user, password string
	token          string
}

func parseCredential(s string) credential {
	if s == "" {
		return credential{}
	}
	if user, pw, ok := strings.Cut(s, ":"); ok {
		return credential{user: user, password: pw}
	}
	return credential{token: s}
}

// token is a bearer token of one scope.
type token struct {
	value     string
	refreshAt time.Time // after this a new one is fetched before use
	expires   time.Time // after this it is not used at all
}

// authTransport adds the registry's Authorization to requests for the
// registry's own scheme and host, and to no other: a redirect to another
// host (a CDN, S3) is sent as it is. The header is set on a copy of each
// request, so net/http's redirect code has nothing to copy along.
//
// It learns the scheme from the registry's first 401: Basic (the
// credentials go with every request from then on) or Bearer (a token per
// scope from the realm the challenge names, fetched before the request
// when the scope's token is missing or due for refresh, and fetched again
// once when the registry refuses it).
type authTransport struct {
	base    http.RoundTripper
	scheme  string // the registry's
	host    string
	timeout time.Duration // of one token request
	log     *slog.Logger
	cred    atomic.Pointer[credential]
	now     func() time.Time
	fetches singleflight.Group // token requests in flight, by scope

	mu sync.Mutex // protects the following
	// basic: the registry answered with a Basic challenge.
	basic bool
	// realm and service of the registry's last Bearer challenge; realm
	// is nil before one.
	realm   *url.URL
	service string
	// tokens are by the scope a request path needs (scopeOf); asks is
	// what to ask the realm for, for such a scope, when a challenge
	// said more than scopeOf knows (the catalog, extra actions).
	tokens map[string]token
	asks   map[string]string
}

func newAuthTransport(base http.RoundTripper, registry *url.URL, timeout time.Duration, log *slog.Logger) *authTransport {
	t := &authTransport{base: base, scheme: registry.Scheme, host: registry.Host, timeout: timeout, log: log,
		now: time.Now, tokens: map[string]token{}, asks: map[string]string{}}
	t.cred.Store(&credential{})
	return t
}

// set replaces the credentials; tokens got with the old ones are dropped.
func (t *authTransport) set(cred string) {
	c := parseCredential(cred)
	t.cred.Store(&c)
	t.mu.Lock()
	t.tokens = map[string]token{}
	t.mu.Unlock()
}

func (t *authTransport) ours(u *url.URL) bool {
	return u.Scheme == t.scheme && strings.EqualFold(u.Host, t.host)
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.ours(req.URL) || req.Header.Get("Authorization") != "" {
		return t.base.RoundTrip(req)
	}
	scope := scopeOf(req.URL.Path)
	auth, err := t.header(req.Context(), scope, false)
	if err != nil {
		return nil, err
	}
	resp, err := t.send(req, auth)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || req.Body != nil && req.Body != http.NoBody {
		return resp, err
	}
	retry, err := t.learn(req.Context(), resp.Header.Values("Www-Authenticate"), scope, auth)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	if retry == "" {
		return resp, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return t.send(req, retry)
}

func (t *authTransport) send(req *http.Request, auth string) (*http.Response, error) {
	if auth == "" {
		return t.base.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", auth)
	return t.base.RoundTrip(r)
}

// header is the Authorization for a request of the scope, as far as the
// transport knows the registry's scheme: a static token, basic
// credentials, or the scope's bearer token (fetched now if it is missing
// or due, or if fresh is set); "" for none.
func (t *authTransport) header(ctx context.Context, scope string, fresh bool) (string, error) {
	c := t.cred.Load()
	if c.token != "" {
		return "Bearer " + c.token, nil
	}
	t.mu.Lock()
	basic, realm, service := t.basic, t.realm, t.service
	tok, have := t.tokens[scope]
	ask := t.asks[scope]
	t.mu.Unlock()
	switch {
	case basic && c.user != "":
		return basicAuth(c), nil
	case realm == nil:
		return "", nil
	}
	now := t.now()
	if have && !fresh && now.Before(tok.refreshAt) {
		return "Bearer " + tok.value, nil
	}
	if ask == "" {
		ask = scope
	}
	v, err := t.fetchToken(ctx, realm, service, scope, ask)
	if err != nil {
		if have && !fresh && now.Before(tok.expires) {
			t.log.Warn("oci: token refresh failed; using the current token until it expires", "registry", t.host, "scope", scope, "err", err)
			return "Bearer " + tok.value, nil
		}
		return "", err
	}
	return "Bearer " + v, nil
}

// learn reads the challenges of a 401 and returns the Authorization to
// retry with, "" for none (the 401 stands: no credentials to offer, or
// they were just refused).
func (t *authTransport) learn(ctx context.Context, values []string, scope, sent string) (string, error) {
	var bearer, basic *challenge
	for _, ch := range parseChallenges(values) {
		switch ch.scheme {
		case "bearer":
			if bearer == nil {
				bearer = &ch
			}
		case "basic":
			if basic == nil {
				basic = &ch
			}
		}
	}
	c := t.cred.Load()
	switch {
	case bearer != nil && c.token == "":
		realm, err := t.checkRealm(bearer.params["realm"])
		if err != nil {
			return "", err
		}
		t.mu.Lock()
		if t.realm == nil || *t.realm != *realm || t.service != bearer.params["service"] {
			t.tokens, t.asks = map[string]token{}, map[string]string{}
		}
		t.basic, t.realm, t.service = false, realm, bearer.params["service"]
		if s := bearer.params["scope"]; s != "" && s != scope {
			// The registry knows best which scope the request needs:
			// ask for what it said too, from now on.
			t.asks[scope] = joinScopes(t.asks[scope]+" "+scope, s)
		}
		t.mu.Unlock()
		return t.header(ctx, scope, strings.HasPrefix(sent, "Bearer "))
	case basic != nil && c.user != "" && sent == "":
		t.mu.Lock()
		t.basic = true
		t.mu.Unlock()
		return basicAuth(c), nil
	}
	return "", nil
}

// checkRealm accepts a token realm: an absolute http or https URL, never
// http when the registry is reached over https (the credentials would
// cross the network in the clear).
func (t *authTransport) checkRealm(raw string) (*url.URL, error) {
	r, err := url.Parse(raw)
	switch {
	case raw == "":
		return nil, errors.New("the registry's Bearer challenge names no realm (token endpoint)")
	case err != nil || r.Host == "" || r.Scheme != "http" && r.Scheme != "https":
		return nil, fmt.Errorf("the registry's token realm %q is not an http(s) URL", truncate(raw, 256))
	case r.Scheme == "http" && t.scheme == "https":
		return nil, fmt.Errorf("the registry's token realm %s is plain http while the registry is https: refused", upstream.Redact(r))
	}
	r.User = nil
	return r, nil
}

// fetchToken gets a token for the scope (asking the realm for ask) and
// keeps it, one request per scope at a time. The request runs on its own deadline (TokenTimeout),
// not on the caller's context, so that one caller giving up does not fail
// the others waiting for the same token.
func (t *authTransport) fetchToken(ctx context.Context, realm *url.URL, service, scope, ask string) (string, error) {
	ch := t.fetches.DoChan(scope, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.timeout)
		defer cancel()
		tok, err := t.requestToken(ctx, realm, service, ask)
		if err != nil {
			return "", err
		}
		t.mu.Lock()
		t.tokens[scope] = tok
		t.mu.Unlock()
		return tok.value, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// requestToken is one GET of the token endpoint (the distribution token
// spec; Docker Hub's): credentials, if any, as basic authentication to
// the realm only; no redirects followed.
func (t *authTransport) requestToken(ctx context.Context, realm *url.URL, service, scope string) (token, error) {
	target := *realm
	q := target.Query()
	if service != "" {
		q.Set("service", service)
	}
	for s := range strings.FieldsSeq(scope) {
		q.Add("scope", s)
	}
	target.RawQuery = q.Encode()
	desc := "token request to " + upstream.Redact(&url.URL{Scheme: realm.Scheme, Host: realm.Host, Path: realm.Path})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return token{}, transportError(desc, err)
	}
	req.Header.Set("User-Agent", "imgcache")
	if c := t.cred.Load(); c.user != "" {
		req.Header.Set("Authorization", basicAuth(c))
	}
	start := t.now()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %v", t.timeout)
		}
		return token{}, transportError(desc, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		se := newStatusError(resp)
		if resp.StatusCode == http.StatusUnauthorized {
			se.hint = "the token endpoint refused the credentials"
		}
		return token{}, &requestError{req: desc, err: se}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenReply+1))
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %v", t.timeout)
		}
		return token{}, transportError(desc, err)
	}
	tok, err := parseTokenReply(body, start)
	if err != nil {
		return token{}, &requestError{req: desc, err: err}
	}
	return tok, nil
}

// parseTokenReply reads {"token" or "access_token", "expires_in"}; a
// token lives expires_in seconds from when it was asked for (60 when not
// said, as the spec has it) and is refreshed after three quarters of
// that, so that no request carries one about to expire.
func parseTokenReply(body []byte, asked time.Time) (token, error) {
	if len(body) > maxTokenReply {
		return token{}, fmt.Errorf("token reply is larger than %d bytes", maxTokenReply)
	}
	var r struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return token{}, errors.New("token reply is not the JSON of a token")
	}
	v := r.AccessToken
	if v == "" {
		v = r.Token
	}
	if v == "" {
		return token{}, errors.New("token reply holds no token")
	}
	if strings.ContainsAny(v, " \t\r\n") || !printableASCII(v) {
		return token{}, errors.New("token reply holds a token that cannot go in a header")
	}
	ttl := defaultTokenTTL
	if r.ExpiresIn > 0 {
		ttl = min(time.Duration(r.ExpiresIn)*time.Second, maxTokenTTL)
	}
	return token{value: v, refreshAt: asked.Add(ttl * 3 / 4), expires: asked.Add(ttl)}, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func basicAuth(c *credential) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.user+":"+c.password))
}

// scopeOf is the token scope a request path needs: pull of its
// repository, or the catalog; "" for the API root.
func scopeOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	if rest == "_catalog" {
		return "registry:catalog:*"
	}
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/list"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return "repository:" + rest[:i] + ":pull"
		}
	}
	return ""
}

// joinScopes is the space-separated union of two scope lists.
func joinScopes(a, b string) string {
	seen := map[string]bool{}
	var out []string
	for s := range strings.FieldsSeq(a + " " + b) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

// truncate shortens what came from a server before it goes in a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
