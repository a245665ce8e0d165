package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCacheDirAndMountpointChecks: a new cache directory is made 0700; one
// writable by others is refused; a mountpoint inside the cache directory
// (or the reverse) is refused; --allow-other mounts with
// default_permissions; security.* answers "no such attribute".
func TestCacheDirAndMountpointChecks(t *testing.T) {
	need(t, "getfattr")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 4096})
	origin := startOrigin(t, root)

	fresh := filepath.Join(t.TempDir(), "new", "cache")
	m := startMount(t, origin.url, fresh, "--allow-other")
	fi, err := os.Stat(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Fatalf("new cache directory has mode %04o, want 0700", perm)
	}
	if opts := mountOptions(t, m.dir); !strings.Contains(opts, "default_permissions") || !strings.Contains(opts, "allow_other") {
		t.Fatalf("--allow-other mount options %q lack default_permissions or allow_other", opts)
	}
	out, err := runErr("getfattr", "-n", "security.capability", m.path("a.img"))
	if err == nil || !strings.Contains(out, "No such attribute") {
		t.Fatalf("security.capability: %v %q, want ENODATA", err, out)
	}
	m.unmount(t)

	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	out, err = runErr(bin, "mount", "--cache-dir", open, origin.url, t.TempDir())
	if err == nil || !strings.Contains(out, "writable by others") {
		t.Fatalf("cache directory mode 0777: err=%v %q, want a refusal", err, out)
	}

	cache := t.TempDir()
	inside := filepath.Join(cache, "mnt")
	if err := os.Mkdir(inside, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{cache, inside}, {inside, cache}} {
		out, err = runErr(bin, "mount", "--cache-dir", c[0], origin.url, c[1])
		if err == nil || !strings.Contains(out, "inside one another") {
			t.Fatalf("cache %s, mountpoint %s: err=%v %q, want a refusal", c[0], c[1], err, out)
		}
	}
}

// mountOptions returns the mount and superblock options of the mount at
// dir, from /proc/self/mountinfo.
func mountOptions(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return l
		}
	}
	t.Fatalf("%s is not mounted", dir)
	return ""
}
