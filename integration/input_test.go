package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Unclear input gets a clear answer: values a flag does not take, image
// names that are not names, names that would disguise themselves.

// mountRefused runs imgcache mount with args and returns its output and
// exit status. Should the mount get ready (the input was taken), it is
// stopped and the test fails.
func mountRefused(t *testing.T, args ...string) (string, int) {
	t.Helper()
	p := exec.Command(bin, append([]string{"mount"}, args...)...)
	p.Dir = t.TempDir() // where an empty --cache-dir would quietly put the cache
	var out lockedBuffer
	p.Stdout, p.Stderr = &out, &out
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	for {
		select {
		case err := <-done:
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			return out.String(), code
		case <-time.After(100 * time.Millisecond):
			if strings.Contains(out.String(), "ready: ") {
				p.Process.Signal(syscall.SIGTERM)
				<-done
				t.Errorf("imgcache mount %q mounted; want a refusal:\n%s", args, out.String())
				return out.String(), 0
			}
		}
	}
}

// TestBadFlagValuesExit2: each value a flag does not take is a one-line
// error naming the flag, exit status 2, and nothing is mounted.
func TestBadFlagValuesExit2(t *testing.T) {
	for _, f := range [][2]string{
		{"--max-size", "nan"}, {"--max-size", "0.5"}, {"--read-timeout", "-1s"}, {"--read-timeout", "0"},
		{"--catalog-ttl", "-1s"}, {"--flush-interval", "-1s"}, {"--retry-max", "-5"}, {"--chunk-size", "0"},
		{"--high-water", "0"}, {"--stall-time", "-1s"}, {"--prefetchers", "-1"}, {"--cache-dir", ""},
	} {
		args := []string{f[0], f[1], "http://127.0.0.1:1/", t.TempDir()}
		if f[0] != "--cache-dir" {
			args = append([]string{"--cache-dir", t.TempDir()}, args...)
		}
		out, code := mountRefused(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, f[0]) {
			t.Errorf("imgcache mount %s %q: exit %d, want 2 and one line naming the flag:\n%s", f[0], f[1], code, out)
		}
	}
}

// TestDisguisedNamesAreNotListed: an upstream whose index names images
// with a bidi override ("bidi\u202egpj.exe" shows as "bidiexe.jpg"),
// zero-width characters or a line separator: ls of the mount, from a
// process of its own, and imgcache ls show only the honest name; the
// daemon logs each refused name, escaped.
func TestDisguisedNamesAreNotListed(t *testing.T) {
	need(t, "ls")
	disguised := []string{"bidi\u202egpj.exe", "zero\u200bwidth.img", "line\u2028sep.img", "iso\u2066late\u2069.img", "\ufeffbom.img"}
	body := []byte("0123456789")
	var idx strings.Builder
	idx.WriteString(`{"version":1,"images":[{"name":"safe.img","size":10,"sha256":"","mtime":"2026-01-01T00:00:00Z"}`)
	for _, n := range disguised {
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
	m := startMount(t, srv.URL+"/", "")
	if got := strings.Split(strings.TrimSpace(run(t, "ls", "-1A", m.dir)), "\n"); !slices.Equal(got, []string{"safe.img"}) {
		t.Errorf("ls of the mount shows %q, want only safe.img", got)
	}
	out := cliOK(t, "ls", "--cache-dir", m.cacheDir)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "safe.img") {
		t.Errorf("imgcache ls:\n%s\nwant the header and safe.img", out)
	}
	m.unmount(t)
	log := m.proc.stderr.String()
	if n := strings.Count(log, "left out"); n != len(disguised) {
		t.Errorf("the daemon logged %d refused names, want %d:\n%s", n, len(disguised), log)
	}
	for _, n := range disguised {
		if strings.Contains(log, n) {
			t.Errorf("the daemon's log shows the name %q raw", n)
		}
	}
}

// TestImageNamesOnTheCommandLine: a name that is not a name ("../x"
// answered "no such endpoint: DELETE /v1/x") is a one-line usage error
// quoting it, exit 2, with or without a daemon; a name with a newline
// stays on one line; the daemon quotes the names in its errors; and the
// API itself refuses a name another client sends with 400.
func TestImageNamesOnTheCommandLine(t *testing.T) {
	need(t, "curl")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1000})
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	dir := []string{"--cache-dir", m.cacheDir}

	refused := func(when string) {
		t.Helper()
		for _, c := range [][]string{
			{"evict", "../x"}, {"stat", "../x"}, {"pin", "a/../a.img"}, {"unpin", ".."}, {"prefetch", "../x"},
			{"verify", "../x"}, {"stat", "a\nb.img"}, {"evict", "bidi\u202egpj.exe"},
		} {
			r := cli(t, append(c, dir...)...)
			msg := strings.TrimSpace(r.stderr)
			if r.code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, fmt.Sprintf("%q", c[1])) ||
				strings.Contains(msg, "endpoint") {
				t.Errorf("%s: imgcache %q: exit %d, stderr %q; want exit 2 and one line quoting the name", when, c, r.code, r.stderr)
			}
		}
	}
	refused("mounted")

	r := cli(t, append([]string{"stat", "nope ü.img"}, dir...)...)
	if r.code != 1 || !strings.Contains(r.stderr, `"nope ü.img": no such image`) {
		t.Errorf("stat of an unknown image: exit %d, %q; want exit 1 quoting the name", r.code, r.stderr)
	}

	out := run(t, "curl", "-s", "--path-as-is", "-X", "DELETE", "-w", " %{http_code}",
		"--unix-socket", m.cacheDir+"/control.sock", "http://imgcache/v1/images/%2E%2E/x")
	if want := `{"error":"unsafe name \"../x\": component \"..\""}` + "\n 400"; out != want {
		t.Errorf("curl DELETE /v1/images/%%2E%%2E/x: %q, want %q", out, want)
	}
	if got := cliOK(t, append([]string{"stat", "a.img"}, dir...)...); !strings.Contains(got, "absent") {
		t.Errorf("a.img after the refusals:\n%s", got)
	}

	m.unmount(t)
	refused("not mounted")
}

// TestMountpointMustBeEmpty: mounting over a directory that holds files,
// or over a live imgcache mount of another cache directory, is refused
// with one line naming --nonempty (main did both silently); with
// --nonempty it mounts over the files, which come back at the unmount.
func TestMountpointMustBeEmpty(t *testing.T) {
	need(t, "cat", "ls")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1000})
	origin := startOrigin(t, root)

	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "precious.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := mountRefused(t, "--cache-dir", t.TempDir(), origin.url, full)
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "not empty") ||
		!strings.Contains(out, "--nonempty") {
		t.Errorf("mount over a non-empty directory: exit %d, want 1 and one line naming --nonempty:\n%s", code, out)
	}

	m := startMount(t, origin.url, "")
	out, code = mountRefused(t, "--cache-dir", t.TempDir(), origin.url, m.dir)
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "live imgcache mount") ||
		!strings.Contains(out, "--nonempty") {
		t.Errorf("mount over a live imgcache mount: exit %d, want 1 and one line naming --nonempty:\n%s", code, out)
	}
	if got := run(t, "cat", m.path("a.img")); len(got) != 1000 {
		t.Errorf("the first mount after the refusal: a.img has %d bytes", len(got))
	}
	m.unmount(t)

	over := start(t, "ready: ", bin, "mount", "--nonempty", "--cache-dir", t.TempDir(), origin.url, full)
	if got := strings.Fields(run(t, "ls", full)); !slices.Equal(got, []string{"a.img"}) {
		t.Errorf("ls of a mount over files with --nonempty: %q", got)
	}
	if err := over.stop(); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "cat", filepath.Join(full, "precious.txt")); got != "mine" {
		t.Errorf("after the unmount the hidden file holds %q", got)
	}
}
