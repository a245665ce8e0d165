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
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
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

	// ByDigest says that Digest alone names the bytes: entries with the
	// same digest are one image (one cache entry, one inode) shown under
	// several names, however many tags, repositories or products name
	// it. Content-addressed upstreams (OCI blobs, simplestreams items)
	// set it, with Digest.
	ByDigest bool
	// Content, when not nil, is the whole entry: a small file that the
	// upstream built or fetched while listing (an OCI layout's
	// index.json, a simplestreams product file), with Size its length
	// and Digest its sha256. The cache stores it as it takes the
	// catalog, so it reads at once and offline, and changes only with
	// the catalog.
	Content []byte
	// Attrs are facts about the entry that users see as
	// user.imgcache.<key> xattrs (an item's ftype, LXD's fingerprint, a
	// layer's media type); see Validate for what a key and value may be.
	Attrs map[string]string
}

// Bounds of an Entry the cache can take (see Validate).
const (
	// MaxSize is the largest image: 16 TiB. Bigger files are not images
	// (the largest disk images are a few TiB), ext4 cannot hold one as
	// a single file, and it keeps every derived number small: at the
	// smallest chunk size an image has at most 2^28 chunks, whose map of
	// present chunks is at most 32 MiB (2 MiB at the default 1 MiB).
	MaxSize = 1 << 44
	// MaxETagLen bounds a validator; real ones are under 100 bytes.
	MaxETagLen = 1024
	// MaxContent bounds Entry.Content: the largest product files of
	// public simplestreams servers are a few tens of MiB.
	MaxContent = 64 << 20
	// MaxAttrs and MaxAttrLen bound Entry.Attrs (per entry; per value).
	MaxAttrs   = 32
	MaxAttrLen = 1024
)

// The modification times an entry may have: those whose Unix time in
// nanoseconds fits an int64 (years 1678 to 2262), so that Version and
// every comparison of times is exact.
var (
	MinModTime = time.Unix(0, math.MinInt64).UTC()
	MaxModTime = time.Unix(0, math.MaxInt64).UTC()
)

// ErrBadEntry is wrapped by every error of Validate.
var ErrBadEntry = errors.New("entry refused")

// Validate checks what an upstream says of an image before the cache
// builds anything from it: a clean name, a size in [0, MaxSize], a
// modification time that is zero (unknown) or in [MinModTime,
// MaxModTime], a digest that is empty or "sha256:" and 64 lowercase hex
// digits, an ETag of at most MaxETagLen bytes. Every upstream's entries
// pass through it (the cache's catalog intake calls it), so a hostile
// listing costs one refused entry, never a crash or an allocation of its
// choosing.
func (e Entry) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %q: %s", ErrBadEntry, e.Name, fmt.Sprintf(format, args...))
	}
	if clean, err := CleanName(e.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadEntry, err)
	} else if clean != e.Name {
		return bad("name is not clean (%q)", clean)
	}
	if e.Size < 0 || e.Size > MaxSize {
		return bad("size %d is outside [0, %d]", e.Size, int64(MaxSize))
	}
	if !e.ModTime.IsZero() && (e.ModTime.Before(MinModTime) || e.ModTime.After(MaxModTime)) {
		return bad("modification time %s is outside [%d, %d]", e.ModTime.UTC().Format(time.RFC3339),
			MinModTime.Year(), MaxModTime.Year())
	}
	if e.Digest != "" && !validDigest(e.Digest) {
		return bad("malformed digest %q", e.Digest)
	}
	if len(e.ETag) > MaxETagLen {
		return bad("ETag of %d bytes, over %d", len(e.ETag), MaxETagLen)
	}
	if e.ByDigest && e.Digest == "" {
		return bad("named by its digest but has none")
	}
	if e.Content != nil {
		if len(e.Content) > MaxContent || int64(len(e.Content)) != e.Size {
			return bad("content of %d bytes for a size of %d (at most %d)", len(e.Content), e.Size, MaxContent)
		}
		if sum := sha256.Sum256(e.Content); e.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
			return bad("content does not match its digest %q", e.Digest)
		}
	}
	if len(e.Attrs) > MaxAttrs {
		return bad("%d attributes, over %d", len(e.Attrs), MaxAttrs)
	}
	for k, v := range e.Attrs {
		if !validAttrKey(k) {
			return bad("attribute name %q is not lowercase letters, digits and '_'", k)
		}
		if len(v) > MaxAttrLen || !printable(v) {
			return bad("attribute %s: value is not printable text of at most %d bytes", k, MaxAttrLen)
		}
	}
	return nil
}

// validAttrKey: 1 to 64 of [a-z0-9_], starting with a letter.
func validAttrKey(k string) bool {
	if k == "" || len(k) > 64 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// printable: valid UTF-8 without control or format characters (the same
// characters refused in names, so an xattr cannot rewrite a terminal).
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r >= utf8.RuneSelf && unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}

// validDigest: "sha256:" and 64 lowercase hex digits.
func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Version identifies the bytes of an entry: two entries with the same
// name and Version hold the same bytes. The strongest identity the
// upstream gives wins: a digest, else an ETag, else size and mtime.
func (e Entry) Version() string { return string(e.AppendVersion(nil)) }

// AppendVersion appends Version to b: a catalog of a million entries
// makes no string of it.
func (e *Entry) AppendVersion(b []byte) []byte {
	switch {
	case e.Digest != "":
		return append(b, e.Digest...)
	case e.ETag != "":
		b = append(append(append(b, "etag:"...), e.ETag...), '/')
		return strconv.AppendInt(b, e.Size, 10)
	default:
		b = strconv.AppendInt(append(b, "stat:"...), e.Size, 10)
		return strconv.AppendInt(append(b, '/'), e.ModTime.UnixNano(), 10)
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
