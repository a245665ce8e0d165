package httpdir

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// IndexPath is where an imgcache origin publishes its Index, relative to
// its base URL. It is a dot path so that it can never be an image name.
const IndexPath = ".imgcache/index.json"

// IndexVersion is the version of Index this package reads and writes.
const IndexVersion = 1

// Index is the catalog an imgcache origin publishes at IndexPath:
//
//	{"version": 1, "images": [
//	  {"name": "ubuntu/jammy.img", "size": 2361393152,
//	   "sha256": "5f1c...", "mtime": "2024-05-01T10:00:00.123456789Z",
//	   "etag": "\"8c1a2-8cc00000-17ac...\""}]}
type Index struct {
	Version int          `json:"version"`
	Images  []IndexImage `json:"images"`
}

// IndexImage is one image of an Index.
type IndexImage struct {
	// Name is a clean slash-separated path (upstream.CleanName), relative
	// to the origin's base URL, not escaped.
	Name string `json:"name"`
	// Size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the digest of the bytes in lowercase hex; empty if the
	// origin did not compute it.
	SHA256 string `json:"sha256"`
	// ModTime is the file's modification time (RFC 3339 with nanoseconds).
	ModTime time.Time `json:"mtime"`
	// ETag is the validator the origin sends with the file, quotes
	// included; empty if unknown.
	ETag string `json:"etag,omitempty"`
}

// errNotOrigin: the upstream has no index, so its listings are crawled.
var errNotOrigin = errors.New("no origin index")

// listIndex fetches and reads the origin index; errNotOrigin if there is
// none.
func (u *Upstream) listIndex(ctx context.Context) ([]upstream.Entry, error) {
	target := u.fileURL(IndexPath)
	body, _, err := u.getBody(ctx, target, u.opts.MaxListingBytes, "origin index")
	if errors.Is(err, upstream.ErrNotFound) {
		return nil, errNotOrigin
	}
	if err != nil {
		return nil, err
	}
	entries, refused, err := parseIndex(body, u.opts.MaxEntries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describe("GET", target, ""), err)
	}
	for _, r := range refused {
		u.log.Warn("httpdir: origin index entry left out", "upstream", u.shown, "err", r)
	}
	return entries, nil
}

// parseIndex reads an Index. Entries with a name CleanName refuses (or
// one that is not already clean), a negative size or a malformed digest
// are left out and returned as errors; duplicates keep the first.
func parseIndex(body []byte, maxEntries int) ([]upstream.Entry, []error, error) {
	var idx Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, nil, fmt.Errorf("origin index: %w", err)
	}
	if idx.Version != IndexVersion {
		return nil, nil, fmt.Errorf("origin index has version %d; this imgcache reads version %d", idx.Version, IndexVersion)
	}
	if len(idx.Images) > maxEntries {
		return nil, nil, fmt.Errorf("origin index has %d images, over the cap of %d", len(idx.Images), maxEntries)
	}
	var refused []error
	entries := make([]upstream.Entry, 0, len(idx.Images))
	seen := make(map[string]bool, len(idx.Images))
	for _, im := range idx.Images {
		e, err := indexEntry(im)
		if err != nil {
			refused = append(refused, err)
			continue
		}
		if seen[e.Name] {
			continue
		}
		seen[e.Name] = true
		entries = append(entries, e)
	}
	return entries, refused, nil
}

func indexEntry(im IndexImage) (upstream.Entry, error) {
	name, err := upstream.CleanName(im.Name)
	if err != nil {
		return upstream.Entry{}, err
	}
	if name != im.Name {
		// The origin writes clean names; another spelling is a bug or
		// a forgery, and would be fetched under a different URL.
		return upstream.Entry{}, fmt.Errorf("name %q is not clean (%q)", im.Name, name)
	}
	if im.Size < 0 {
		return upstream.Entry{}, fmt.Errorf("%q: negative size %d", name, im.Size)
	}
	e := upstream.Entry{Name: name, Size: im.Size, ModTime: im.ModTime, ETag: usableETag(im.ETag)}
	if im.SHA256 != "" {
		d, ok := digestOf(im.SHA256)
		if !ok {
			return upstream.Entry{}, fmt.Errorf("%q: malformed sha256 %q", name, im.SHA256)
		}
		e.Digest = d
	}
	return e, nil
}

// digestOf turns 64 hex digits into an Entry.Digest.
func digestOf(h string) (string, bool) {
	if len(h) != 64 {
		return "", false
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", false
	}
	return "sha256:" + strings.ToLower(h), true
}

// usableETag returns etag, or "" if it could not be sent back in
// If-Range (control characters, non-ASCII).
func usableETag(etag string) string {
	for i := 0; i < len(etag); i++ {
		if etag[i] < 0x20 || etag[i] >= 0x7f {
			return ""
		}
	}
	return etag
}
