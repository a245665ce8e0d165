// Package upstream defines what the cache needs from a place that serves
// images: a catalog of what it offers, and byte ranges of one image.
//
// Each protocol (a plain HTTP directory, later OCI registries,
// simplestreams, Glance) lives in a package of its own below this one and
// satisfies Upstream. The cache never sees URLs, headers or listing
// formats; an upstream never sees chunks, files or the index.
package upstream

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Entry is one image an upstream offers.
type Entry struct {
	// Name is a clean slash-separated path relative to the upstream root
	// (see CleanName); a name with slashes shows as nested directories.
	Name string
	// Size in bytes; always known (an entry of unknown size is not listed).
	Size int64
	// ModTime is the upstream's modification time, zero when unknown.
	ModTime time.Time
	// ETag is the upstream's validator for this version, as sent
	// (quotes included), empty when unknown.
	ETag string
	// Digest is "sha256:<64 lowercase hex>" when the upstream publishes
	// one (an origin index, a SHA256SUMS file), else empty.
	Digest string
}

// Version identifies the bytes of an entry: two entries with the same
// name and Version hold the same bytes. The strongest identity the
// upstream gives wins: a digest, else an ETag, else size and mtime.
func (e Entry) Version() string {
	switch {
	case e.Digest != "":
		return e.Digest
	case e.ETag != "":
		return "etag:" + e.ETag + "/" + strconv.FormatInt(e.Size, 10)
	default:
		return "stat:" + strconv.FormatInt(e.Size, 10) + "/" + strconv.FormatInt(e.ModTime.UnixNano(), 10)
	}
}

// Upstream is a source of images.
type Upstream interface {
	// List returns every image the upstream offers, in any order, names
	// already cleaned and unique. Entries whose names cannot be made
	// safe are left out (and logged by the implementation).
	List(ctx context.Context) ([]Entry, error)

	// Fetch returns a reader of exactly the bytes [off, off+n) of e.
	// The implementation checks that what it receives really is that
	// range of that version (status, Content-Range, validators, length);
	// a reply that is not is an error, never bytes at the wrong offset.
	// If the body ends early the reader returns ErrShortBody after the
	// bytes it did get, which are correct. A reply showing that e
	// changed upstream gives an error that wraps ErrChanged.
	Fetch(ctx context.Context, e Entry, off, n int64) (io.ReadCloser, error)

	// URL returns where the named image is fetched from, with any
	// credentials removed, for users' eyes (xattrs, logs).
	URL(name string) string
}

var (
	// ErrShortBody: the upstream ended a reply before the bytes it promised.
	ErrShortBody = errors.New("upstream reply ended early")
	// ErrChanged: the image is no longer the version the cache knows.
	ErrChanged = errors.New("image changed upstream")
	// ErrNotFound: the upstream does not have the image (any more).
	ErrNotFound = errors.New("image not found upstream")
)

// Redact is u as a string without its user information, so that
// credentials (a token is often passed as the user name) never reach
// a log line, an error or an xattr.
func Redact(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = nil
	return c.String()
}
