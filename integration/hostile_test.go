package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	l := mountInfo(t, dir)
	if l == "" {
		t.Fatalf("%s is not mounted", dir)
	}
	return l
}

// TestHostileUpstreamNames: an upstream whose index names escape
// attempts (.., absolute, NUL and control characters, percent-encoded
// traversal, over-long, absurdly deep) shows only its safe images, and
// nothing appears outside the cache directory's data and index, nor
// outside the mount.
func TestHostileUpstreamNames(t *testing.T) {
	need(t, "ls", "find", "cat")
	hostile := []string{
		"../escape.img", "../../etc/imgcache-escape", "/abs/olute.img", "a/../../up.img",
		"nul\x00.img", "ctl\n.img", "esc\x1b.img", "%2e%2e/pct.img", "..%2fpct2.img",
		strings.Repeat("x", 300) + ".img", strings.Repeat("d/", 40) + "deep.img", ".hidden.img", "back\\slash.img",
	}
	body := []byte("0123456789")
	var idx strings.Builder
	idx.WriteString(`{"version":1,"images":[{"name":"safe.img","size":10,"sha256":"","mtime":"2026-01-01T00:00:00Z"}`)
	for _, n := range hostile {
		b, _ := json.Marshal(n)
		fmt.Fprintf(&idx, `,{"name":%s,"size":10,"sha256":"","mtime":"2026-01-01T00:00:00Z"}`, b)
	}
	idx.WriteString(`]}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.imgcache/index.json" {
			w.Write([]byte(idx.String()))
			return
		}
		http.ServeContent(w, r, "x", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), bytes.NewReader(body))
	}))
	defer srv.Close()
	parent := t.TempDir()
	cacheDir := filepath.Join(parent, "cache")
	m := startMount(t, srv.URL+"/", cacheDir)
	// An index holds names unescaped: "%2e%2e" there is a directory of
	// that literal name, harmless; in a listing it would decode to "..",
	// which httpdir's crawl tests show refused.
	got := strings.Fields(run(t, "find", m.dir, "-mindepth", "1", "-printf", "%P\n"))
	if want := []string{"%2e%2e", "%2e%2e/pct.img", "safe.img"}; !slices.Equal(got, want) {
		t.Fatalf("mount shows %q, want %q", got, want)
	}
	if got := run(t, "cat", m.path("safe.img")); got != string(body) {
		t.Fatalf("safe.img = %q", got)
	}
	m.unmount(t)
	for _, f := range strings.Fields(run(t, "find", parent)) {
		rel, _ := filepath.Rel(cacheDir, f)
		if f != parent && f != cacheDir && !strings.HasPrefix(rel, "index") && !strings.HasPrefix(rel, "data") &&
			rel != "lock" && rel != "control.sock" {
			t.Errorf("unexpected file %s", f)
		}
	}
	if _, err := os.Stat("/etc/imgcache-escape"); err == nil {
		t.Fatal("/etc/imgcache-escape exists")
	}
}
