// Package oci is the upstream of images kept in an OCI / Docker
// registry (distribution, Harbor, GHCR, Docker Hub...): each repository
// shows as an OCI image layout, so that any OCI tool reads the mount as it
// reads a local layout, and every blob is one image of the cache, named by
// its digest.
//
// # Catalog
//
// For each repository (Options.Repos, else the registry's _catalog) and
// each of its tags (tags/list, following Link), List shows:
//
//	<repo>/oci-layout              {"imageLayoutVersion":"1.0.0"}
//	<repo>/index.json              every tag's manifest, with its ref.name
//	<repo>/blobs/sha256/<hex>      manifests, configs and layers
//	<repo>/<tag>/<title>           a layer with an image title (ORAS)
//
// Every blob is an entry with ByDigest set: the one blob under several
// names (repositories, tags, titles) is one image. oci-layout, index.json
// and the manifests carry their bytes in Entry.Content, so that they read
// offline and change only with the catalog. index.json is sorted by tag
// and so byte for byte the same while no tag moves.
//
// A refresh asks each tag with HEAD (Docker-Content-Digest), which
// registries do not count as a pull; a manifest is fetched (GET) only
// when its digest is new, verified against the digest, and remembered
// while a tag names it. Children of image indexes (every platform) are
// fetched too: a layout whose index names a manifest it lacks is broken
// for every tool that walks it, and their blobs cost nothing until read.
//
// A tag whose manifest is bad (its digest does not match, over
// MaxManifestBytes, not JSON, an unknown or schema 1 media type) is left
// at the manifest it had, or out if it had none, with a log line; so is a
// layer title that is not one safe file name. Warnings lists these
// refusals of the last List (upstream.Warner; the mount shows them as
// catalog_warnings). A failure to reach the registry fails List, so that
// the cache keeps its last catalog.
//
// # Fetch
//
// Blob reads are single-range GETs of /v2/<repo>/blobs/<digest>, checked
// before a byte is handed out (status, Content-Range, length, the
// registry's digest headers). A registry that answers with the whole blob
// (distribution as a pull-through cache does for a blob it does not have
// yet) gives correct bytes: those before the range are skipped.
//
// # Credentials
//
// Options.Credentials ("user:password", or a token) go to the registry's
// own scheme and host and, for the bearer flow, to the token realm its
// challenge names; never to a host a redirect leads to (a CDN), never to
// a log line, an error or URL.
package oci

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpclient"
	"oras.land/oras-go/v2/registry"
)

// Defaults of Options.
const (
	DefaultConnectTimeout   = 5 * time.Second
	DefaultHeaderTimeout    = 10 * time.Second
	DefaultStallTimeout     = 10 * time.Second
	DefaultTokenTimeout     = 30 * time.Second
	DefaultMaxRepos         = 10_000
	DefaultMaxTags          = 100_000
	DefaultMaxManifestBytes = 4 << 20 // distribution's own limit
	DefaultMaxEntries       = 1_000_000
	DefaultConcurrency      = 8
)

// Options tune an Upstream; the zero value of each field means its default.
type Options struct {
	// Repos are the repositories shown (--repo). Empty: every
	// repository the registry's _catalog lists.
	Repos []string
	// Credentials: "user:password" for basic authentication and for the
	// token endpoint of the bearer flow, or a token (no colon) sent as
	// is as a bearer token. Empty: the URL's user information, if any;
	// else anonymous (the bearer flow still gets anonymous tokens).
	Credentials string

	ConnectTimeout time.Duration
	HeaderTimeout  time.Duration
	// StallTimeout fails a blob reply that delivers no byte for this long.
	StallTimeout time.Duration
	// TokenTimeout bounds one request to the token endpoint.
	TokenTimeout time.Duration
	CAFile       string
	Insecure     bool
	Proxy        string
	// Transport carries every request, under the credentials this
	// package adds (tests inject faults here). nil: httpclient's.
	Transport http.RoundTripper
	// Logger receives refused tags, titles and odd replies. nil: discard.
	Logger *slog.Logger

	// MaxRepos caps the repositories of the catalog; MaxTags the tags
	// of one repository. A registry over either fails List (a catalog
	// silently cut short would make the cache drop images).
	MaxRepos int
	MaxTags  int
	// MaxManifestBytes caps one manifest; a bigger one is refused.
	MaxManifestBytes int64
	// MaxEntries caps the entries of the whole catalog.
	MaxEntries int
	// Concurrency caps the requests in flight during one List.
	Concurrency int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&o.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&o.HeaderTimeout, DefaultHeaderTimeout)
	setDefault(&o.StallTimeout, DefaultStallTimeout)
	setDefault(&o.TokenTimeout, DefaultTokenTimeout)
	setDefault(&o.MaxRepos, DefaultMaxRepos)
	setDefault(&o.MaxTags, DefaultMaxTags)
	setDefault(&o.MaxManifestBytes, DefaultMaxManifestBytes)
	setDefault(&o.MaxEntries, DefaultMaxEntries)
	setDefault(&o.Concurrency, DefaultConcurrency)
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Upstream is a registry.
//
// Locks: Upstream.mu, listing.mu and authTransport.mu are leaves: none is
// held while another is taken or while a request is made.
type Upstream struct {
	given  string   // oci[+http]://host[:port], as the user names the registry
	base   *url.URL // scheme://host[:port], no user information
	host   string   // host[:port], as oras-go names a registry
	plain  bool     // oci+http
	opts   Options
	log    *slog.Logger
	client *http.Client
	auth   *authTransport

	ignoresRange sync.Once // logs once that the registry ignores Range
	noHeadDigest sync.Once // logs once that HEAD gives no digest

	mu sync.Mutex // protects the following
	// manifests are the manifests the last catalog (or Remember) holds,
	// by digest: a refresh fetches only those it does not know.
	manifests map[string]*manifest
	// tagged is the manifest digest of each repository's tags in the
	// last catalog, kept for a tag whose new manifest is refused.
	tagged map[string]map[string]string
	// blobRepo names a repository that holds each blob of the last
	// catalog, by digest: where Fetch asks for it.
	blobRepo map[string]string
	// warnings are what the last catalog left out (Warnings).
	warnings []string
}

var (
	_ upstream.Upstream   = (*Upstream)(nil)
	_ upstream.Rememberer = (*Upstream)(nil)
	_ upstream.Warner     = (*Upstream)(nil)
)

// New returns the upstream of the registry at rawURL: oci://HOST[:PORT]
// (HTTPS) or oci+http://HOST[:PORT] (plain HTTP). It makes no request.
func New(rawURL string, opts Options) (*Upstream, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // ue quotes the URL, password included
		}
		return nil, fmt.Errorf("oci: cannot parse the upstream URL: %v", err)
	}
	shown := upstream.Redact(u)
	var plain bool
	switch u.Scheme {
	case "oci":
	case "oci+http":
		plain = true
	default:
		return nil, fmt.Errorf("oci: %s: scheme must be oci (HTTPS) or oci+http", shown)
	}
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("oci: %s: no host", shown)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("oci: %s: a registry URL is oci://HOST[:PORT], with no path; name repositories with --repo", shown)
	}
	if err := (registry.Reference{Registry: u.Host}).ValidateRegistry(); err != nil {
		return nil, fmt.Errorf("oci: %s: not a registry host[:port]", shown)
	}
	opts.setDefaults()
	opts.Repos = append([]string(nil), opts.Repos...)
	for _, r := range opts.Repos {
		if err := checkRepo(r); err != nil {
			return nil, fmt.Errorf("oci: --repo %q: %v", r, err)
		}
	}
	if opts.Credentials == "" && u.User != nil {
		opts.Credentials = u.User.String()
		if un, err := url.PathUnescape(opts.Credentials); err == nil {
			opts.Credentials = un
		}
	}
	base := &url.URL{Scheme: "https", Host: u.Host}
	if plain {
		base.Scheme = "http"
	}
	tr := opts.Transport
	if tr == nil {
		if tr, err = httpclient.NewSpliceTransport(httpclient.Options{
			ConnectTimeout: opts.ConnectTimeout,
			HeaderTimeout:  opts.HeaderTimeout,
			CAFile:         opts.CAFile,
			Insecure:       opts.Insecure,
			Proxy:          opts.Proxy,
		}); err != nil {
			return nil, fmt.Errorf("oci: %s: %v", shown, err)
		}
	}
	auth := newAuthTransport(tr, base, opts.TokenTimeout, opts.Logger)
	auth.set(opts.Credentials)
	opts.Credentials = "" // kept by the transport only
	return &Upstream{
		given:     (&url.URL{Scheme: u.Scheme, Host: u.Host}).String(),
		base:      base,
		host:      u.Host,
		plain:     plain,
		opts:      opts,
		log:       opts.Logger,
		client:    &http.Client{Transport: auth, CheckRedirect: httpclient.CheckRedirect},
		auth:      auth,
		manifests: map[string]*manifest{},
		tagged:    map[string]map[string]string{},
		blobRepo:  map[string]string{},
	}, nil
}

// checkRepo checks a repository name against the distribution grammar
// (lowercase components of letters, digits and separators), which also
// makes each component a safe file name.
func checkRepo(name string) error {
	if err := (registry.Reference{Registry: "h", Repository: name}).ValidateRepository(); err != nil {
		return errors.New("not a repository name (lowercase letters, digits, '.', '_', '-', separated by '/')")
	}
	if strings.Count(name, "/")+1 > upstream.MaxNameDepth-3 {
		return fmt.Errorf("more than %d components", upstream.MaxNameDepth-3)
	}
	return nil
}

// SetCredentials replaces the credentials sent from now on (a reload
// re-reads them); "" sends none. Tokens got with the old ones are dropped.
func (u *Upstream) SetCredentials(cred string) error {
	u.auth.set(cred)
	return nil
}

// URL returns where the named entry comes from, for users' eyes: the
// blob or manifest URL of a blob, the tag list of a synthesized file;
// for "" (the mount's source) the registry as the user named it,
// oci[+http]://HOST[:PORT], without credentials.
func (u *Upstream) URL(name string) string {
	if name == "" {
		return u.given
	}
	repo, rest := splitName(name)
	if repo == "" {
		return u.base.String() + "/v2/"
	}
	if hex, ok := strings.CutPrefix(rest, "blobs/sha256/"); ok {
		kind := "blobs"
		u.mu.Lock()
		if _, ok := u.manifests["sha256:"+hex]; ok {
			kind = "manifests"
		}
		u.mu.Unlock()
		return u.repoURL(repo, kind, "sha256:"+hex)
	}
	if rest == "index.json" || rest == "oci-layout" {
		return u.repoURL(repo, "tags", "list")
	}
	return u.repoURL(repo, "manifests", strings.SplitN(rest, "/", 2)[0])
}

// splitName finds the repository of an entry's name: the components
// before blobs/sha256/<hex>, before index.json or oci-layout, or before
// <tag>/<title>. A name it cannot split gives "".
func splitName(name string) (repo, rest string) {
	comps := strings.Split(name, "/")
	n := len(comps)
	switch {
	case n >= 4 && comps[n-3] == "blobs" && comps[n-2] == "sha256":
		return strings.Join(comps[:n-3], "/"), strings.Join(comps[n-3:], "/")
	case n >= 2 && (comps[n-1] == "index.json" || comps[n-1] == "oci-layout"):
		return strings.Join(comps[:n-1], "/"), comps[n-1]
	case n >= 3:
		return strings.Join(comps[:n-2], "/"), strings.Join(comps[n-2:], "/")
	}
	return "", ""
}

// repoURL is <base>/v2/<repo>/<kind>/<ref>.
func (u *Upstream) repoURL(repo, kind, ref string) string {
	return u.base.String() + "/v2/" + repo + "/" + kind + "/" + ref
}

// statusError is a reply whose status the caller cannot use; 404 is
// upstream.ErrNotFound. It carries the status and Retry-After for the
// cache's retries (upstream.Temporary, upstream.RetryAfterOf).
type statusError struct {
	code       int
	status     string
	retryAfter time.Duration
	hint       string // what the user can do, if anything
	said       string // the registry's own words (its error codes), if known
}

func (e *statusError) HTTPStatus() int           { return e.code }
func (e *statusError) RetryAfter() time.Duration { return e.retryAfter }
func (e *statusError) Is(target error) bool {
	return target == upstream.ErrNotFound && e.code == http.StatusNotFound
}

func (e *statusError) Error() string {
	s := e.status
	if e.retryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.retryAfter)
	}
	if e.hint != "" {
		s += ": " + e.hint
	}
	if e.said != "" {
		s += " (the registry says: " + e.said + ")"
	}
	return s
}

func newStatusError(resp *http.Response) *statusError {
	status := resp.Status
	if status == "" {
		status = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return &statusError{code: resp.StatusCode, status: status, hint: statusHint(resp.StatusCode),
		retryAfter: httpclient.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
}

func statusHint(code int) string {
	switch code {
	case http.StatusUnauthorized:
		return "the registry wants credentials (--credentials-file) or refused them"
	case http.StatusForbidden:
		return "the credentials do not allow pulling this"
	}
	return ""
}

// requestError names the request that failed ("GET http://h/v2/r/blobs/sha256:... bytes=0-9").
type requestError struct {
	req string
	err error
}

func (e *requestError) Error() string { return e.req + ": " + e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// transportError keeps only what a *url.Error wraps: its URL is ours and
// holds no credentials, but the request is named by the caller already.
func transportError(req string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &requestError{req: req, err: err}
}
