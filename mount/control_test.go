package mount

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/control"
)

// TestAPIErrorKinds: each failure of the engine reaches the API as its
// kind, with the engine's message; any other stays of no kind (500).
func TestAPIErrorKinds(t *testing.T) {
	kinds := []error{control.ErrBadName, control.ErrNotFound, control.ErrConflict, control.ErrNoRoom, control.ErrNotMounted}
	for _, tc := range []struct {
		cause, kind error
	}{
		{upstream.ErrUnsafeName, control.ErrBadName},
		{cachecore.ErrNotFound, control.ErrNotFound},
		{cachecore.ErrBusy, control.ErrConflict},
		{cachecore.ErrPinned, control.ErrConflict},
		{cachecore.ErrNoRoom, control.ErrNoRoom},
		{cachecore.ErrClosed, control.ErrNotMounted},
		{cachecore.ErrInvalid, nil},
		{errors.New("disk on fire"), nil},
	} {
		err := &cachecore.Error{Op: "evict", Name: "a.img", Err: tc.cause}
		got := apiError(err)
		if got.Error() != err.Error() || !errors.Is(got, tc.cause) {
			t.Errorf("%v: %q, want the engine's message and cause", tc.cause, got)
		}
		for _, k := range kinds {
			if errors.Is(got, k) != (k == tc.kind) {
				t.Errorf("%v: errors.Is(%v) = %v", tc.cause, k, !(k == tc.kind))
			}
		}
	}
	if apiError(nil) != nil {
		t.Error("apiError(nil) is not nil")
	}
}

// TestCheckName: the API takes a name only as the catalog could hold it.
func TestCheckName(t *testing.T) {
	var b backend
	for _, name := range []string{"a.img", "sub/dir/b c.img", "ünï/cödé.img"} {
		if err := b.CheckName(name); err != nil {
			t.Errorf("CheckName(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", "../x", "a//b", "a/./b", "/a.img", "a.img/", "a\nb", ".hidden"} {
		err := b.CheckName(name)
		if !errors.Is(err, upstream.ErrUnsafeName) || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
			t.Errorf("CheckName(%q): %v, want ErrUnsafeName quoting it", name, err)
		}
	}
}
