package mount

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	for _, c := range []struct{ line, point, typ string }{
		{"41 26 0:38 / /tmp/inp-m rw,nosuid,nodev,relatime - fuse.imgcache imgcache rw,user_id=0,group_id=0", "/tmp/inp-m", "fuse.imgcache"},
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue", "/mnt2", "ext3"},
		{`50 26 0:40 / /tmp/a\040b\012c\134d rw - tmpfs tmpfs rw`, "/tmp/a b\nc\\d", "tmpfs"},
	} {
		point, typ, ok := parseMountinfo(c.line)
		if !ok || point != c.point || typ != c.typ {
			t.Errorf("parseMountinfo(%q) = %q, %q, %v; want %q, %q", c.line, point, typ, ok, c.point, c.typ)
		}
	}
	for _, l := range []string{"", "41 26 0:38 / /x rw", "41 26 0:38 / /x rw -"} {
		if _, _, ok := parseMountinfo(l); ok {
			t.Errorf("parseMountinfo(%q) ok", l)
		}
	}
}

func TestCheckMountpoint(t *testing.T) {
	empty := t.TempDir()
	if err := checkMountpoint(empty, false); err != nil {
		t.Fatalf("empty directory: %v", err)
	}
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "data\nfile"), nil, 0o644)
	err := checkMountpoint(full, false)
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "--nonempty") ||
		!strings.Contains(err.Error(), `"data\nfile"`) {
		t.Fatalf("non-empty directory: %v; want a one-line refusal naming --nonempty", err)
	}
	if err := checkMountpoint(full, true); err != nil {
		t.Fatalf("non-empty directory with --nonempty: %v", err)
	}
	if typ, err := mountedAt("/proc"); err != nil || typ != "proc" {
		t.Fatalf("mountedAt(/proc) = %q, %v", typ, err)
	}
	if typ, err := mountedAt(empty); err != nil || typ != "" {
		t.Fatalf("mountedAt(a plain directory) = %q, %v", typ, err)
	}
}
