package mount

import (
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/failover"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
	"github.com/imgcache/imgcache/cachecore/upstream/oci"
	"github.com/imgcache/imgcache/cachecore/upstream/simplestreams"
)

// Trust is how a mount reaches its upstreams and how it fails: timeouts,
// retries, TLS and credentials. Zero values mean the defaults.
type Trust struct {
	ConnectTimeout time.Duration
	HeaderTimeout  time.Duration
	StallTimeout   time.Duration
	ReadTimeout    time.Duration
	RetryMax       int // <0: no retries
	CAFile         string
	Insecure       bool
	// FlushInterval is how often fetched chunks are recorded in the
	// index (after their data is synced): at most this much fetching is
	// lost to a crash. 0: the cache's default.
	FlushInterval time.Duration
	// Proxy is a forward proxy for every upstream request (see
	// httpdir.Options.Proxy); empty: HTTP_PROXY and the like.
	Proxy string
	// Credentials for every upstream: "user:password" or a token. They
	// never appear in logs or xattrs.
	Credentials string
	// CredentialsFile, if set, is where Credentials came from: a reload
	// reads it again (reload.go).
	CredentialsFile string
}

// splitUpstreams splits "URL1,URL2" (and any extra mirrors) into URLs.
func splitUpstreams(raw string, mirrors []string) []string {
	var urls []string
	for _, s := range append(strings.Split(raw, ","), mirrors...) {
		if s = strings.TrimSpace(s); s != "" {
			urls = append(urls, s)
		}
	}
	return urls
}

// openUpstreams opens every upstream URL; several become one failover
// upstream, tried in the order given. It also returns each one alone.
func openUpstreams(urls []string, t Trust, repos []string, log *slog.Logger) (upstream.Upstream, []upstream.Upstream, error) {
	if len(urls) == 0 {
		return nil, nil, fmt.Errorf("no upstream URL")
	}
	if t.Insecure {
		log.Warn("!!! TLS CERTIFICATE VERIFICATION IS OFF (--insecure): anyone between this host and the upstream can serve any bytes as any image !!!")
	}
	var ups []upstream.Upstream
	for _, raw := range urls {
		u, err := openUpstream(raw, t, repos, log)
		if err != nil {
			return nil, nil, err
		}
		ups = append(ups, u)
	}
	if len(ups) == 1 {
		return ups[0], ups, nil
	}
	return failover.New(ups, 0, log), ups, nil
}

// Schemes are the URL schemes of the upstreams a mount takes.
var Schemes = []string{"http", "https", "oci", "oci+http", "simplestreams+http", "simplestreams+https"}

// openUpstream picks the upstream protocol by URL scheme: http(s) a
// directory, oci(+http) a registry, simplestreams+http(s) an image server's
// streams. repos (--repo) are the registry repositories to show.
func openUpstream(raw string, t Trust, repos []string, log *slog.Logger) (upstream.Upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream URL: %v", errorsWithoutURL(err))
	}
	if u.User != nil {
		if _, hasPassword := u.User.Password(); hasPassword {
			log.Warn("the upstream URL holds a password, which any user can see in the process list; use --credentials-file or $IMGCACHE_CREDENTIALS", "upstream", upstream.Redact(u))
		}
	}
	if len(repos) > 0 && u.Scheme != "oci" && u.Scheme != "oci+http" {
		return nil, fmt.Errorf("upstream %q: --repo names registry repositories, for an oci:// or oci+http:// upstream", upstream.Redact(u))
	}
	dir := httpdir.Options{
		Logger:         log,
		ConnectTimeout: t.ConnectTimeout,
		HeaderTimeout:  t.HeaderTimeout,
		StallTimeout:   t.StallTimeout,
		CAFile:         t.CAFile,
		Insecure:       t.Insecure,
		Credentials:    t.Credentials,
		Proxy:          t.Proxy,
	}
	switch u.Scheme {
	case "http", "https": // a directory, or an image server's streams at its root
		return simplestreams.Detect(raw, simplestreams.Options{HTTP: dir})
	case "oci", "oci+http":
		return oci.New(raw, oci.Options{
			Repos:          repos,
			Credentials:    t.Credentials,
			ConnectTimeout: t.ConnectTimeout,
			HeaderTimeout:  t.HeaderTimeout,
			StallTimeout:   t.StallTimeout,
			CAFile:         t.CAFile,
			Insecure:       t.Insecure,
			Proxy:          t.Proxy,
			Logger:         log,
		})
	case "simplestreams+http", "simplestreams+https":
		return simplestreams.New(raw, simplestreams.Options{HTTP: dir})
	default:
		return nil, fmt.Errorf("upstream %q: unsupported scheme %q (want one of %s)",
			upstream.Redact(u), u.Scheme, strings.Join(Schemes, ", "))
	}
}

// errorsWithoutURL drops the URL (and so any password) that url.Parse
// quotes in its errors.
func errorsWithoutURL(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

func (t Trust) failureConfig() cachecore.FailureConfig {
	return cachecore.FailureConfig{RetryMax: t.RetryMax, ReadTimeout: t.ReadTimeout}
}

// nested says whether the mountpoint and the cache directory lie inside
// one another, as written or once symbolic links are followed (a link
// must not smuggle the cache into the mount, where the daemon would serve
// its own files, or the mount into the cache).
func nested(mnt, cacheDir string) bool {
	if within(mnt, cacheDir) || within(cacheDir, mnt) {
		return true
	}
	m, c := resolve(mnt), resolve(cacheDir)
	return within(m, c) || within(c, m)
}

// resolve follows the symbolic links of the longest part of p that
// exists (the cache directory may not exist yet) and keeps the rest.
func resolve(p string) string {
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == filepath.Dir(dir) {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}
