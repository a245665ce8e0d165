package upstream

import (
	"errors"
	"path"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestCleanNameAccepts(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"jammy.img", "jammy.img"},
		{"ubuntu/22.04/jammy.img", "ubuntu/22.04/jammy.img"},
		{"/jammy.img", "jammy.img"},
		{"///a//b///c", "a/b/c"},
		{"with space.img", "with space.img"},
		{"100%.img", "100%.img"},
		{"hash#tag?.img", "hash#tag?.img"},
		{"it's & <that>.img", "it's & <that>.img"},
		{"ünïcødé/日本.qcow2", "ünïcødé/日本.qcow2"},
		{"a..b", "a..b"},
		{"nb\u00a0space.img", "nb\u00a0space.img"}, // odd but visible: a space
		{"trailing.", "trailing."},
		{strings.Repeat("x", MaxNameComponent), strings.Repeat("x", MaxNameComponent)},
		{strings.Repeat("d/", MaxNameDepth-1) + "f", strings.Repeat("d/", MaxNameDepth-1) + "f"},
	} {
		got, err := CleanName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCleanNameRefuses(t *testing.T) {
	long := strings.Repeat("x", MaxNameComponent+1)
	for _, tc := range []struct{ in, why string }{
		{"", "empty"},
		{"/", "only slashes"},
		{"//", "only slashes"},
		{"a/", "ends in a slash"},
		{".", `component "."`},
		{"..", `component ".."`},
		{"a/../b", `component ".."`},
		{"../etc/passwd", `component ".."`},
		{"a/./b", `component "."`},
		{".hidden", "hidden"},
		{"a/.imgcache/index.json", "hidden"},
		{"a\x00b", "control character U+0000"},
		{"a\nb", "control character U+000A"},
		{"a\x7fb", "control character U+007F"},
		{"a\u0085b", "control character U+0085"},
		{"a\xffb", "UTF-8"},
		{"bidi\u202egpj.exe", "invisible character U+202E"},
		{"a\u2066b\u2069", "invisible character U+2066"},
		{"zero\u200bwidth.img", "invisible character U+200B"},
		{"join\u200d.img", "invisible character U+200D"},
		{"\ufeffbom.img", "invisible character U+FEFF"},
		{"soft\u00adhyphen.img", "invisible character U+00AD"},
		{"line\u2028sep.img", "invisible character U+2028"},
		{"para\u2029sep.img", "invisible character U+2029"},
		{"a\\b", "backslash"},
		{"..\\..\\windows", "backslash"},
		{long, "longer than 255"},
		{strings.Repeat("abcdefgh/", 120) + "x", "longer than 1024"},
		{strings.Repeat("d/", MaxNameDepth) + "f", "deeper than 16"},
	} {
		got, err := CleanName(tc.in)
		if err == nil {
			t.Errorf("CleanName(%q) = %q, want an error about %s", tc.in, got, tc.why)
			continue
		}
		if !errors.Is(err, ErrUnsafeName) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("CleanName(%q): error %q, want ErrUnsafeName mentioning %q", tc.in, err, tc.why)
		}
		if len(err.Error()) > 300 {
			t.Errorf("CleanName(%q): error of %d bytes; names must be shortened", tc.in, len(err.Error()))
		}
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"a/b.img", "/a//b", "../x", ".hidden", "a\x00", "ü/日本", "a/", "%2e%2e", "bidi\u202egpj.exe", "a\u2028b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, err := CleanName(raw)
		if err != nil {
			if out != "" {
				t.Fatalf("CleanName(%q) returned %q with error %v", raw, out, err)
			}
			return
		}
		checkClean(t, out)
		if again, err := CleanName(out); err != nil || again != out {
			t.Fatalf("CleanName(%q) = %q, but CleanName(%q) = %q, %v", raw, out, out, again, err)
		}
	})
}

// checkClean fails unless name has every property CleanName promises.
func checkClean(t *testing.T, name string) {
	t.Helper()
	if path.Clean(name) != name || path.IsAbs(name) || name == "" || name == "." {
		t.Fatalf("%q is not a clean relative path", name)
	}
	if len(name) > MaxNameLen || !utf8.ValidString(name) || strings.ContainsRune(name, '\\') {
		t.Fatalf("%q breaks a limit", name)
	}
	comps := strings.Split(name, "/")
	if len(comps) > MaxNameDepth {
		t.Fatalf("%q is too deep", name)
	}
	for _, c := range comps {
		if c == "" || c == ".." || c[0] == '.' || len(c) > MaxNameComponent {
			t.Fatalf("%q has component %q", name, c)
		}
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			t.Fatalf("%q has a control or invisible character", name)
		}
	}
}
