package control

import (
	"errors"
	"net/http"
	"testing"
)

// TestKindsOnBothEnds: a kind the backend marks is the status the server
// answers, and the client's error is that kind again.
func TestKindsOnBothEnds(t *testing.T) {
	for _, k := range kinds {
		err := WithKind(errors.New("why"), k.kind)
		if err.Error() != "why" || statusOf(err) != k.status {
			t.Errorf("%v: %q answered %d, want %d", k.kind, err, statusOf(err), k.status)
		}
		reply := &APIError{Status: k.status, Message: "why"}
		for _, other := range kinds {
			if errors.Is(reply, other.kind) != (other.kind == k.kind) {
				t.Errorf("a %d reply: errors.Is(%v) = %v", k.status, other.kind, other.kind != k.kind)
			}
		}
	}
	if statusOf(errors.New("disk on fire")) != http.StatusInternalServerError || WithKind(nil, ErrNotFound) != nil {
		t.Error("an error of no kind is not 500, or WithKind(nil) is not nil")
	}
	if !errors.Is(&NotMountedError{CacheDir: "/c"}, ErrNotMounted) {
		t.Error("NotMountedError is not ErrNotMounted")
	}
}
