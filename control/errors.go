package control

import (
	"errors"
	"net/http"
)

// The kinds of failure the API tells apart. A Backend marks its errors
// with WithKind; the server answers each kind with its own status, and
// the client's *APIError is each kind again (errors.Is).
var (
	ErrBadName    = errors.New("not an image name")    // 400; also a pin rule that cannot be
	ErrNotFound   = errors.New("no such image")        // 404
	ErrConflict   = errors.New("image open or pinned") // 409
	ErrNoRoom     = errors.New("no room in the cache") // 507
	ErrNotMounted = errors.New("cache not mounted")    // 503: the daemon is closing the cache
)

// kinds lists each kind with its status.
var kinds = []struct {
	kind   error
	status int
}{
	{ErrBadName, http.StatusBadRequest},
	{ErrNotFound, http.StatusNotFound},
	{ErrConflict, http.StatusConflict},
	{ErrNoRoom, http.StatusInsufficientStorage},
	{ErrNotMounted, http.StatusServiceUnavailable},
}

// WithKind marks err as a failure of the given kind (ErrNotFound, ...),
// keeping its message, which is what the client is told.
func WithKind(err, kind error) error {
	if err == nil {
		return nil
	}
	return &kindError{err: err, kind: kind}
}

type kindError struct {
	err, kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// statusOf is the status of a reply that reports err: 500 for an error
// of no kind.
func statusOf(err error) int {
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return k.status
		}
	}
	return http.StatusInternalServerError
}
