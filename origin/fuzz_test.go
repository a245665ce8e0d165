package origin

import (
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// FuzzRequestName: whatever path a client asks for, the name served is
// "." or a clean name below the root, never one with "..", a dotfile or
// a control character.
func FuzzRequestName(f *testing.F) {
	for _, s := range []string{"/", "/a.img", "/d/", "/../etc/passwd", "/a/./b", "/.imgcache/x", "//a", "/a\x00b", "/%2e%2e/x", "/a/b/../../c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, _, ok := requestName(p)
		if !ok || name == "." {
			return
		}
		if c, err := upstream.CleanName(name); err != nil || c != name {
			t.Fatalf("requestName(%q) = %q, not clean: %v", p, name, err)
		}
		for _, part := range strings.Split(name, "/") {
			if part == ".." || part == "" || strings.HasPrefix(part, ".") {
				t.Fatalf("requestName(%q) = %q", p, name)
			}
		}
	})
}
