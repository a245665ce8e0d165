package httpdir

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// File is a small file read whole by Get, with the validators a later
// Get sends to learn whether it changed.
type File struct {
	Data    []byte
	ETag    string    // as sent, quotes included; "" if none
	ModTime time.Time // Last-Modified; zero if none
	// Young: the file was modified within a second of the reply. Its
	// validators cannot tell it from a version written later in the
	// same second (Last-Modified has one-second resolution, and so has
	// the ETag of nginx and Apache, made of mtime and size: RFC 9110
	// calls such a validator weak), so a later Get fetches it whole.
	Young bool
}

// Get reads the file name (a clean name relative to the base) whole, at
// most limit bytes, for upstreams whose catalog is a set of files on an
// HTTP directory (simplestreams). With prev, the request is conditional
// on prev's validators, and a 304 reply returns prev itself: a catalog
// refresh that finds nothing new costs no body. A 404 or 410 wraps
// upstream.ErrNotFound.
func (u *Upstream) Get(ctx context.Context, name string, limit int64, prev *File) (*File, error) {
	if _, err := upstream.CleanName(name); err != nil {
		return nil, fmt.Errorf("httpdir: %s: %w", u.shown, err)
	}
	body, h, err := u.getBodyIf(ctx, u.fileURL(name), limit, name, prev)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return prev, nil // not modified
	}
	f := &File{Data: body, ETag: h.Get("ETag")}
	if t, err := http.ParseTime(h.Get("Last-Modified")); err == nil {
		f.ModTime = t.UTC()
		date, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			date = time.Now()
		}
		f.Young = date.Sub(f.ModTime) < 2*time.Second
	}
	return f, nil
}
