package httpclient

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ParseRetryAfter reads a Retry-After value: seconds, or an HTTP date;
// 0 when absent, unreadable, in the past or over a day away.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 || s > 24*3600 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// ParseContentRange parses "bytes first-last/total" of a single range;
// total is -1 for "*".
func ParseContentRange(s string) (first, last, total int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", s)
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !ok {
		return bad()
	}
	rng, size, ok := strings.Cut(strings.TrimSpace(spec), "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if first, err = ParseCount(a); err != nil {
		return bad()
	}
	if last, err = ParseCount(b); err != nil || last < first {
		return bad()
	}
	if size == "*" {
		return first, last, -1, nil
	}
	if total, err = ParseCount(size); err != nil || last >= total {
		return bad()
	}
	return first, last, total, nil
}

// ParseCount parses a non-negative decimal of digits only (ParseInt
// alone would take a sign).
func ParseCount(s string) (int64, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}
