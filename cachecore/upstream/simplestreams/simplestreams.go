// Package simplestreams is the upstream of an image server that
// publishes its images through simplestreams, as LXD and Incus image
// servers do (images.linuxcontainers.org, cloud-images.ubuntu.com): a
// mount of it is a mirror of the server, the same tree byte for byte,
// whose image files fault in on first use.
//
// # Catalog
//
// The tree starts at streams/v1/index.json (format index:1.0), which
// names a product file (format products:1.0) for each stream. A product
// file has products (debian bookworm amd64 default), each with versions
// (20240101_05:24), each with items: the files of that version, each
// with its path below the root, size and sha256. The catalog is
//   - every item of every product of every image-downloads stream, at
//     its path, with its size, its sha256 as the digest (so every byte
//     is verified) and, as xattrs, what clients use: ftype, LXD's
//     fingerprint, the product's aliases, os, release, arch... (attrsOf);
//   - the index and each product file, with the bytes the server sent
//     (Entry.Content), so that clients read exactly what the server
//     published and the mirror's items are exactly what they name.
//
// So a catalog is refused whole (List fails, the cache keeps the last
// good one) when a product file names an item the mirror could not serve
// as named: a path that is not clean (absolute, "..", NUL, "a//b"), no
// size or sha256, one path with two sizes or digests, a file where
// another item needs a directory, an index naming a product file the
// server does not have, a JSON file over its cap or malformed.
//
// # Fetch
//
// Items are plain files on the server: ranges are fetched and checked by
// the httpdir upstream of the same root. The JSON files are served from
// the bytes listed.
package simplestreams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

// Defaults of Options.
const (
	DefaultMaxIndexBytes   = 4 << 20
	DefaultMaxProductBytes = 32 << 20
	DefaultMaxProductFiles = 100
	DefaultMaxItems        = 1_000_000
)

// Options tune an Upstream; the zero value of each field means its default.
type Options struct {
	// HTTP makes and checks the requests: client, TLS, CA file,
	// credentials, proxy, timeouts, logger (see httpdir.Options).
	HTTP httpdir.Options
	// MaxIndexBytes caps streams/v1/index.json.
	MaxIndexBytes int64
	// MaxProductBytes caps one product file; at most upstream.MaxContent.
	// The largest of public servers are a few tens of MiB.
	MaxProductBytes int64
	// MaxProductFiles caps the product files the index may name.
	MaxProductFiles int
	// MaxItems caps the items of the whole catalog.
	MaxItems int
}

func (o *Options) setDefaults() {
	if o.MaxIndexBytes <= 0 {
		o.MaxIndexBytes = DefaultMaxIndexBytes
	}
	if o.MaxProductBytes <= 0 {
		o.MaxProductBytes = DefaultMaxProductBytes
	}
	o.MaxIndexBytes = min(o.MaxIndexBytes, upstream.MaxContent)
	o.MaxProductBytes = min(o.MaxProductBytes, upstream.MaxContent)
	if o.MaxProductFiles <= 0 {
		o.MaxProductFiles = DefaultMaxProductFiles
	}
	if o.MaxItems <= 0 {
		o.MaxItems = DefaultMaxItems
	}
	if o.HTTP.Logger == nil {
		o.HTTP.Logger = slog.New(slog.DiscardHandler)
	}
}

// Upstream is a simplestreams image server.
type Upstream struct {
	dir   *httpdir.Upstream // the server's root as a directory of files
	opts  Options
	log   *slog.Logger
	shown string // the root's URL without credentials

	mu    sync.Mutex               // protects the following
	files map[string]*httpdir.File // the JSON files of the last good catalog, by path
}

var (
	_ upstream.Upstream   = (*Upstream)(nil)
	_ upstream.Rememberer = (*Upstream)(nil)
	_ upstream.Retainer   = (*Upstream)(nil)
)

// Prefix marks an upstream URL as simplestreams: "simplestreams+https://host/".
const Prefix = "simplestreams+"

// CutPrefix returns the http or https URL of a "simplestreams+http(s)://"
// upstream, and whether raw had that form.
func CutPrefix(raw string) (string, bool) {
	rest, ok := strings.CutPrefix(raw, Prefix)
	if !ok || !strings.HasPrefix(rest, "http://") && !strings.HasPrefix(rest, "https://") {
		return raw, false
	}
	return rest, true
}

// New returns the upstream of the simplestreams tree at rawURL: its root,
// where streams/v1/index.json is, as "simplestreams+https://host/path/"
// or a plain http or https URL. It makes no request.
func New(rawURL string, opts Options) (*Upstream, error) {
	raw, _ := CutPrefix(rawURL)
	if strings.HasPrefix(rawURL, Prefix) && raw == rawURL {
		return nil, errors.New("simplestreams: the upstream URL must be simplestreams+http:// or simplestreams+https://")
	}
	opts.setDefaults()
	dir, err := httpdir.New(raw, opts.HTTP)
	if err != nil {
		return nil, fmt.Errorf("simplestreams: %s", strings.TrimPrefix(err.Error(), "httpdir: "))
	}
	base, _ := url.Parse(dir.URL(""))
	return &Upstream{dir: dir, opts: opts, log: opts.HTTP.Logger, shown: upstream.Redact(base)}, nil
}

// URL returns the URL of the named file, without credentials.
func (u *Upstream) URL(name string) string { return u.dir.URL(name) }

// SetCredentials replaces the credentials sent from now on (see
// httpdir.Upstream.SetCredentials).
func (u *Upstream) SetCredentials(cred string) error { return u.dir.SetCredentials(cred) }

// Fetch returns a reader of the bytes [off, off+n) of e. A JSON file of
// the tree is read from the bytes listed; an item is a range GET of the
// file at its path, checked by httpdir. Only the name and size of e are
// the server's: its mtime comes from the version's name, so it must not
// become an If-Range (the sha256 checks the bytes instead).
func (u *Upstream) Fetch(ctx context.Context, e upstream.Entry, off, n int64) (io.ReadCloser, error) {
	if e.Content != nil {
		if off < 0 || n < 0 || off+n > int64(len(e.Content)) {
			return nil, fmt.Errorf("simplestreams: %s: range [%d, %d) is outside the file's %d bytes", u.URL(e.Name), off, off+n, len(e.Content))
		}
		return io.NopCloser(bytes.NewReader(e.Content[off : off+n])), nil
	}
	return u.dir.Fetch(ctx, upstream.Entry{Name: e.Name, Size: e.Size}, off, n)
}

// Remember takes the JSON files of a catalog the cache already holds
// (those with Content and an ETag), so that the first List asks the
// server whether they changed rather than fetching them whole. List
// gives a JSON file an ETag only when it is a validator: not for a file
// modified within a second of the reply that sent it (httpdir.File.Young).
func (u *Upstream) Remember(known upstream.Known) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for e := range known.All() {
		if e.Content == nil || e.ETag == "" {
			continue
		}
		if u.files == nil {
			u.files = map[string]*httpdir.File{}
		}
		u.files[e.Name] = &httpdir.File{Data: e.Content, ETag: e.ETag, ModTime: e.ModTime}
	}
}

// RetainsRemoved is true (upstream.Retainer): a client that read an older
// index may still ask for the files it named, so an item that leaves the
// catalog stays listed while it is cached, marked retired.
func (u *Upstream) RetainsRemoved() bool { return true }
