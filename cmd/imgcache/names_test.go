package main

import (
	"errors"
	"testing"
)

func TestShown(t *testing.T) {
	for in, want := range map[string]string{
		"ubuntu/jammy.img":   "ubuntu/jammy.img",
		"with space.img":     "with space.img",
		"ünï/日本.qcow2":       "ünï/日本.qcow2",
		"bidi\u202egpj.exe":  `"bidi\u202egpj.exe"`,
		"zero\u200bwidth":    `"zero\u200bwidth"`,
		"line\u2028sep":      `"line\u2028sep"`,
		"new\nline":          `"new\nline"`,
		"tab\there":          `"tab\there"`,
		"quote\"and\nnl.img": `"quote\"and\nnl.img"`,
	} {
		if got := shown(in); got != want {
			t.Errorf("shown(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestOneLine(t *testing.T) {
	in := `evict "a": no such image` + "\nsecond line \u202e"
	if got, want := oneLine(in), `evict "a": no such image\nsecond line \u202e`; got != want {
		t.Fatalf("oneLine = %s, want %s", got, want)
	}
}

func TestImageArg(t *testing.T) {
	for in, want := range map[string]string{"a.img": "a.img", "/ubuntu//jammy.img/": "ubuntu/jammy.img", "ubuntu/": "ubuntu"} {
		if got, err := imageArg(in); err != nil || got != want {
			t.Errorf("imageArg(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"../x", "a/../b", "", "/", "a\nb", "bidi\u202egpj.exe", ".hidden"} {
		var ue errUsage
		if got, err := imageArg(in); !errors.As(err, &ue) {
			t.Errorf("imageArg(%q) = %q, %v; want a usage error", in, got, err)
		}
	}
}

func TestPinArg(t *testing.T) {
	for _, c := range []struct {
		arg                   string
		alias, name           bool
		wantKind, wantPattern string
	}{
		{"ubuntu//jammy.img", false, false, "name", "ubuntu/jammy.img"},
		{"images/debian/*", false, false, "glob", "images/debian/*"},
		{"a?.img", false, false, "glob", "a?.img"},
		{"file[1].img", false, false, "glob", "file[1].img"},
		{"file[1].img", false, true, "name", "file[1].img"},
		{"debian/12/amd64", true, false, "alias", "debian/12/amd64"},
	} {
		kind, pattern, err := pinArg(c.arg, c.alias, c.name)
		if err != nil || kind != c.wantKind || pattern != c.wantPattern {
			t.Errorf("pinArg(%q, alias %v, name %v) = %s %q, %v; want %s %q", c.arg, c.alias, c.name, kind, pattern, err,
				c.wantKind, c.wantPattern)
		}
	}
	var ue errUsage
	if _, _, err := pinArg("x", true, true); !errors.As(err, &ue) {
		t.Errorf("pinArg with --alias and --name: %v, want a usage error", err)
	}
	if _, _, err := pinArg("../x", false, false); !errors.As(err, &ue) {
		t.Errorf("pinArg of ../x: %v, want a usage error", err)
	}
}
