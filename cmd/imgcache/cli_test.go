package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
)

const manDir = "../../docs/man"

// TestManPagesCurrent: docs/man holds the page of every command, as the
// commands describe themselves now.
func TestManPagesCurrent(t *testing.T) {
	stale, err := syncManPages(newRoot(), manDir, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Fatalf("docs/man is not current (%s): run 'go run ./cmd/imgcache gen-man docs/man'", strings.Join(stale, ", "))
	}
}

// TestManPagesCheck: the check finds a page that differs, one that is
// missing and one of a command that is gone; writing brings them back
// and leaves the dates of unchanged pages alone.
func TestManPagesCheck(t *testing.T) {
	dir := t.TempDir()
	jan := time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC)
	if _, err := syncManPages(newRoot(), dir, false, jan); err != nil {
		t.Fatal(err)
	}
	if stale, err := syncManPages(newRoot(), dir, true, time.Now()); err != nil || len(stale) > 0 {
		t.Fatalf("fresh pages: stale %q, %v", stale, err)
	}
	mount := filepath.Join(dir, "imgcache-mount.1")
	page, _ := os.ReadFile(mount)
	if !bytes.Contains(page, []byte(`"Jan 2025"`)) || !bytes.Contains(page, []byte("chunk-size")) {
		t.Fatalf("imgcache-mount.1 lacks its date or --chunk-size:\n%s", page)
	}
	os.WriteFile(mount, bytes.Replace(page, []byte("chunk-size"), []byte("chunk-sise"), 1), 0o644)
	os.Remove(filepath.Join(dir, "imgcache-ls.1"))
	os.WriteFile(filepath.Join(dir, "imgcache-gone.1"), []byte(".TH x\n"), 0o644)

	stale, err := syncManPages(newRoot(), dir, true, time.Now())
	slices.Sort(stale)
	if want := []string{"imgcache-gone.1", "imgcache-ls.1", "imgcache-mount.1"}; err != nil || !slices.Equal(stale, want) {
		t.Fatalf("check: stale %q, %v; want %q", stale, err, want)
	}
	var out bytes.Buffer
	if code := run([]string{"gen-man", "--check", dir}, io.Discard, &out); code != 1 || !strings.Contains(out.String(), "imgcache-mount.1") {
		t.Fatalf("gen-man --check: exit %d, %q; want 1 naming imgcache-mount.1", code, out.String())
	}

	mar := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	if _, err := syncManPages(newRoot(), dir, false, mar); err != nil {
		t.Fatal(err)
	}
	if stale, err := syncManPages(newRoot(), dir, true, time.Now()); err != nil || len(stale) > 0 {
		t.Fatalf("after writing: stale %q, %v", stale, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "imgcache-gone.1")); !os.IsNotExist(err) {
		t.Fatalf("the page of a command that is gone stays: %v", err)
	}
	for name, want := range map[string]string{"imgcache-mount.1": "Mar 2025", "imgcache-ls.1": "Mar 2025", "imgcache-stat.1": "Jan 2025"} {
		page, _ := os.ReadFile(filepath.Join(dir, name))
		if d, _ := manDate(page); d.Format("Jan 2006") != want {
			t.Errorf("%s dated %s, want %s", name, d.Format("Jan 2006"), want)
		}
	}
}

// TestUsageNamesEveryCommand: the usage imgcache prints lists every
// command there is, and every one has a man page's one-line summary.
func TestUsageNamesEveryCommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--help"}, &out, io.Discard); code != 0 || out.String() != usage {
		t.Fatalf("--help: exit %d\n%s", code, out.String())
	}
	for _, c := range newRoot().Commands() {
		if !c.IsAvailableCommand() {
			continue
		}
		if !strings.Contains(usage, "imgcache "+c.Name()+" ") && !strings.Contains(usage, " / "+c.Name()+" ") {
			t.Errorf("the usage does not list %q", c.Name())
		}
		if c.Short == "" || c.Long == "" {
			t.Errorf("%s has no summary or description", c.Name())
		}
	}
}

// TestMisuse: each is a one-line error naming the command, exit 2.
func TestMisuse(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `imgcache: unknown command "frobnicate"`},
		{[]string{"--frobnicate"}, "imgcache: unknown flag: --frobnicate"},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"version", "x"}, "imgcache version: takes no arguments"},
		{[]string{"completion"}, "imgcache completion: want one shell"},
		{[]string{"completion", "tcsh"}, `imgcache completion: unknown shell "tcsh"`},
		{[]string{"completion", "bash", "zsh"}, "imgcache completion: want one shell"},
		{[]string{"stat"}, "imgcache stat: want one image NAME or PATH"},
		{[]string{"stat", "a", "b"}, "imgcache stat: want one image NAME or PATH"},
		{[]string{"mount", "-max-size", "nan", "http://127.0.0.1:1/", "/nonexistent"}, "imgcache mount: invalid argument \"nan\" for \"--max-size\""},
		{[]string{"mount", "-max-size=nan", "http://127.0.0.1:1/", "/nonexistent"}, "--max-size"},
	} {
		var stderr bytes.Buffer
		code := run(c.args, io.Discard, &stderr)
		msg := stderr.String()
		if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) || !strings.HasSuffix(msg, " --help')\n") {
			t.Errorf("imgcache %q: exit %d, %q; want exit 2 and one line with %q and the help to run", c.args, code, msg, c.want)
		}
	}
	var stderr bytes.Buffer
	if code := run(nil, io.Discard, &stderr); code != 2 || stderr.String() != usage {
		t.Errorf("no command: exit %d, %q; want 2 and the usage", code, stderr.String())
	}
}

// TestGoStyleFlags: a long flag with one dash, as Go's flag package took
// it, is the flag; one-letter flags and arguments after -- are left alone.
func TestGoStyleFlags(t *testing.T) {
	root := newRoot()
	got := goStyleFlags(root, []string{"mount", "-debug", "-cache-dir=/x", "--allow-other", "-h", "u", "--", "-nonempty"})
	want := []string{"mount", "--debug", "--cache-dir=/x", "--allow-other", "-h", "u", "--", "-nonempty"}
	if !slices.Equal(got, want) {
		t.Fatalf("goStyleFlags = %q, want %q", got, want)
	}
	if got := goStyleFlags(newRoot(), []string{"ls", "-json", "-wait"}); !slices.Equal(got, []string{"ls", "--json", "-wait"}) {
		t.Fatalf("ls: %q (only ls's own flags)", got)
	}
	var out bytes.Buffer
	if code := run([]string{"-help"}, &out, io.Discard); code != 0 || out.String() != usage {
		t.Fatalf("-help: exit %d", code)
	}
}

// TestCompletionScripts: each shell gets a script that calls imgcache
// back for completions (the scripts are run in bash and fish by the
// integration tests).
func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string][]string{
		"bash": {"complete -o default -F __start_imgcache imgcache", "__complete"},
		"zsh":  {"#compdef imgcache", "__complete"},
		"fish": {"complete -c imgcache", "__complete"},
	} {
		var out bytes.Buffer
		if code := run([]string{"completion", shell}, &out, io.Discard); code != 0 {
			t.Fatalf("completion %s: exit %d", shell, code)
		}
		for _, w := range want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("the %s script lacks %q", shell, w)
			}
		}
	}
}

// TestCompletion: commands, flags and flag values complete from the
// command tree; image names complete to nothing, not to files, when no
// daemon answers; a stat argument that starts like a path completes as
// a file.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "pr"}, []string{"prefetch\t", "prune\t", ":4"}},
		{[]string{"__complete", "mount", "--verify", ""}, []string{"lazy", "strict", ":4"}},
		{[]string{"__complete", "mount", "--cache-"}, []string{"--cache-dir\t", ":4"}},
		{[]string{"__complete", "mount", "http://x/", ""}, []string{":16"}}, // directories only
		{[]string{"__complete", "evict", "--cache-dir", dir, ""}, []string{":4"}},
		{[]string{"__complete", "stat", "--cache-dir", dir, "./"}, []string{":0"}}, // files
		{[]string{"__complete", "completion", ""}, []string{"bash", "zsh", "fish", ":4"}},
	} {
		var out bytes.Buffer
		if code := run(c.args, &out, io.Discard); code != 0 {
			t.Fatalf("%q: exit %d", c.args, code)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != len(c.want) {
			t.Errorf("%q: %q, want %q", c.args, lines, c.want)
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("%q: %q, want %q", c.args, lines, c.want)
				break
			}
		}
	}
}

func TestVersion(t *testing.T) {
	if got := buildCommit([]debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"}}); got != "abc123 (2026-01-02T03:04:05Z, modified)" {
		t.Errorf("buildCommit = %q", got)
	}
	if got := buildCommit([]debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}); got != "abc123" {
		t.Errorf("buildCommit = %q", got)
	}
	if got := buildCommit(nil); got != "" {
		t.Errorf("buildCommit of no settings = %q", got)
	}
	packageVersion = "9.8.7"
	defer func() { packageVersion = "" }()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		var out bytes.Buffer
		if code := run(args, &out, io.Discard); code != 0 || !strings.HasPrefix(out.String(), "imgcache 9.8.7\ncommit ") ||
			strings.Count(out.String(), "\n") != 3 {
			t.Errorf("%q: exit %d, %q", args, code, out.String())
		}
	}
}

// TestImageOf: the attributes an image shows read back into its state;
// a value that does not parse is an error naming the attribute.
func TestImageOf(t *testing.T) {
	img, err := imageOf("ubuntu/jammy.img", map[string]string{
		"hits": "3", "state": "partial", "cached_bytes": "1048576", "size": "4194304", "digest": "sha256:ab",
		"last_access": "2026-01-02T03:04:05Z", "error": "2026-01-02T03:04:06Z fetch: 503 Service Unavailable",
		"source": "http://o/ubuntu/jammy.img", "pinned": "1", "queued": "0",
	})
	if err != nil || img.Name != "ubuntu/jammy.img" || img.Hits != 3 || img.State != "partial" || img.CachedBytes != 1<<20 ||
		img.Size != 4<<20 || img.Digest != "sha256:ab" || !img.Pinned || img.Queued || img.Error != "fetch: 503 Service Unavailable" ||
		!img.ErrorAt.Equal(time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)) || !img.LastAccess.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) ||
		img.Source != "http://o/ubuntu/jammy.img" {
		t.Fatalf("imageOf = %+v, %v", img, err)
	}
	if _, err := imageOf("a", map[string]string{"state": "absent", "size": "lots"}); err == nil || !strings.Contains(err.Error(), "user.imgcache.size") {
		t.Fatalf("a size of lots: %v", err)
	}
	if _, err := imageOf("a", map[string]string{"size": "1"}); err == nil {
		t.Fatal("no state: no error")
	}
	// The upstream's attributes are the rest; retired is the mount's.
	img, err = imageOf("i", map[string]string{"state": "verified", "ftype": "squashfs", "fingerprint": "ab",
		"retired": "2026-01-02T03:04:05Z"})
	if err != nil || len(img.Attrs) != 2 || img.Attrs["ftype"] != "squashfs" || img.Attrs["fingerprint"] != "ab" ||
		!img.Retired.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("imageOf with attributes = %+v, %v", img, err)
	}
}
