package oci

import (
	"fmt"
	"slices"
	"sync"
)

// Refusals shown by Warnings: maxRefusals lines at most; beyond that the
// lines kept are the first in order and the last one counts the rest.
// It matches the lines the cache shows on the root (catalog_warnings),
// so that the count users see is right. keptRefusals bounds what one
// List holds, so that the lines shown are the same at each refresh while
// that many or fewer are refused, whatever order the requests end in.
const (
	maxRefusals    = 16
	keptRefusals   = 256
	maxRefusalLine = 512
)

// refusals collects what one List leaves out, one line each, for
// Warnings (upstream.Warner); the log has each with its details.
type refusals struct {
	mu    sync.Mutex // protects the following
	lines []string
	more  int // lines beyond keptRefusals
}

func (r *refusals) add(format string, args ...any) {
	line := truncate(fmt.Sprintf(format, args...), maxRefusalLine)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.lines) >= keptRefusals {
		r.more++
		return
	}
	r.lines = append(r.lines, line)
}

// list is the lines sorted, at most maxRefusals, the last counting the
// ones left out if there are more.
func (r *refusals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := slices.Sorted(slices.Values(r.lines))
	lines = slices.Compact(lines)
	if len(lines)+r.more <= maxRefusals {
		return lines
	}
	rest := len(lines) + r.more - (maxRefusals - 1)
	return append(lines[:maxRefusals-1], fmt.Sprintf("and %d more; the log names each", rest))
}

// Warnings says what the last successful List left out and why
// (upstream.Warner): refused repositories, tags, manifests, titles and
// names, and tags kept at their last manifest.
func (u *Upstream) Warnings() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.warnings)
}
