package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrStalled: a reply delivered no byte for longer than its stall timeout.
// Implementations wrap it so that Temporary can tell a stall from a
// refusal.
var ErrStalled = errors.New("reply stalled")

// HTTPStatus is implemented by errors that carry the status code of a
// reply, so that code above the protocol can tell 503 from 404.
type HTTPStatus interface{ HTTPStatus() int }

// RetryAfter is implemented by errors of replies that said when to ask
// again (an HTTP Retry-After header).
type RetryAfter interface{ RetryAfter() time.Duration }

// Temporary reports whether err is worth retrying after a pause: a 5xx,
// 408 or 429 reply, a reset or aborted connection, a timeout, a stall, a
// body that ended early. Definitive answers are not: not found, changed,
// a refused connection (nobody is listening; failover, not retries, is
// the cure), a TLS failure, cancellation.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) ||
		errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound) {
		return false
	}
	var hs HTTPStatus
	if errors.As(err, &hs) {
		c := hs.HTTPStatus()
		return c >= 500 || c == 408 || c == 429
	}
	switch {
	case errors.Is(err, ErrStalled), errors.Is(err, ErrShortBody),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT):
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// RetryAfterOf is the pause a reply asked for, or 0.
func RetryAfterOf(err error) time.Duration {
	var ra RetryAfter
	if errors.As(err, &ra) {
		return max(0, ra.RetryAfter())
	}
	return 0
}
