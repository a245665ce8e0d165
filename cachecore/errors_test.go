package cachecore

import (
	"strings"
	"testing"
)

// TestErrorQuotesName: a name from an upstream or a user is quoted, so
// that an error naming "a\nb" stays one line and shows what it holds.
func TestErrorQuotesName(t *testing.T) {
	err := &Error{Op: "open", Name: "a\nb\u202e.img", Err: ErrNotFound}
	if got, want := err.Error(), `open "a\nb\u202e.img": no such image`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if strings.ContainsAny(err.Error(), "\n\u202e") {
		t.Fatal("the name is shown raw")
	}
}
