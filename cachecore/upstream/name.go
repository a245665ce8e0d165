package upstream

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on a clean name. They are well inside what Linux allows
// (NAME_MAX 255, PATH_MAX 4096) so that a name always fits below a
// mountpoint, and small enough that a hostile upstream cannot make the
// catalog tree deep or its paths long.
const (
	MaxNameComponent = 255  // bytes in one component
	MaxNameLen       = 1024 // bytes in the whole name
	MaxNameDepth     = 16   // components
)

// ErrUnsafeName is wrapped by every error of CleanName.
var ErrUnsafeName = errors.New("unsafe name")

// CleanName checks a name an upstream gave for an image (already
// percent-decoded) and returns it as a clean slash-separated relative
// path, or an error saying why it cannot be shown.
//
// The only changes it makes are harmless spellings: leading slashes are
// dropped and runs of slashes become one, so "/a//b" is "a/b". Everything
// else that is odd is refused rather than repaired, because a repaired
// name would be a different file than the one the upstream meant:
//   - an empty name, or one that ends in a slash (a directory);
//   - invalid UTF-8, a control character (C0, DEL and C1) or a backslash;
//   - an invisible character that changes how the rest is shown: a
//     format character (Unicode Cf: bidi controls such as U+202E, which
//     make "bidi\u202egpj.exe" show as "bidiexe.jpg", zero-width
//     characters, the soft hyphen, the BOM) or a line or paragraph
//     separator (U+2028, U+2029);
//   - a component "." or "..";
//   - a hidden component (leading "."): the origin keeps its index under
//     a dot path, and dotfiles are not images;
//   - more than MaxNameComponent bytes in a component, MaxNameLen in all,
//     or MaxNameDepth components.
//
// Names are not Unicode-normalized: the bytes are the upstream's, as its
// URLs need them. The result r always satisfies CleanName(r) == r and
// path.Clean(r) == r.
func CleanName(raw string) (string, error) {
	if raw == "" {
		return "", nameError(raw, "empty")
	}
	if !utf8.ValidString(raw) {
		return "", nameError(raw, "not valid UTF-8")
	}
	for _, r := range raw {
		switch {
		case unicode.IsControl(r):
			return "", nameError(raw, fmt.Sprintf("control character %U", r))
		case r >= utf8.RuneSelf && unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp):
			return "", nameError(raw, fmt.Sprintf("invisible character %U", r))
		case r == '\\':
			return "", nameError(raw, "backslash")
		}
	}
	name := collapseSlashes(raw)
	if name == "" {
		return "", nameError(raw, "no name, only slashes")
	}
	if len(name) > MaxNameLen {
		return "", nameError(raw, fmt.Sprintf("longer than %d bytes", MaxNameLen))
	}
	depth := 0
	for comp := range strings.SplitSeq(name, "/") {
		depth++
		if err := checkComponent(raw, comp); err != nil {
			return "", err
		}
	}
	if depth > MaxNameDepth {
		return "", nameError(raw, fmt.Sprintf("deeper than %d components", MaxNameDepth))
	}
	return name, nil
}

func checkComponent(raw, comp string) error {
	switch {
	case comp == "":
		return nameError(raw, "ends in a slash")
	case comp == "." || comp == "..":
		return nameError(raw, fmt.Sprintf("component %q", comp))
	case comp[0] == '.':
		return nameError(raw, fmt.Sprintf("hidden component %q", comp))
	case len(comp) > MaxNameComponent:
		return nameError(raw, fmt.Sprintf("a component is longer than %d bytes", MaxNameComponent))
	}
	return nil
}

// collapseSlashes drops leading slashes and turns runs of slashes into
// one; a trailing slash stays, to be refused.
func collapseSlashes(s string) string {
	s = strings.TrimLeft(s, "/")
	if !strings.Contains(s, "//") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '/' && i > 0 && s[i-1] == '/' {
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// nameError quotes at most the first 128 bytes of the name: names come
// from upstreams and may be huge.
func nameError(raw, reason string) error {
	const show = 128
	if len(raw) > show {
		return fmt.Errorf("%w %q... (%d bytes): %s", ErrUnsafeName, raw[:show], len(raw), reason)
	}
	return fmt.Errorf("%w %q: %s", ErrUnsafeName, raw, reason)
}
