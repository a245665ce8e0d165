package integration

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/control"
)

// scaleImages writes a catalog of n images, all but three of them in one
// directory (big/e-00000.img, ...), each holding its own name, and
// returns their names sorted. The three others sort around the big
// directory ("a-b.img" before "big/", "big-x/" after it) and make a
// second directory.
func scaleImages(t *testing.T, root string, n int) []string {
	t.Helper()
	names := []string{"a-b.img", "big-x/y.img", "small/z.img"}
	for i := range n - len(names) {
		names = append(names, fmt.Sprintf("big/e-%05d.img", i))
	}
	for _, name := range names {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(names)
	return names
}

// TestLargeDirectoryAndStreamingList: a catalog of 20,000 images, most of
// them in one directory (bench/run.sh measures a million): ls of the
// directory from another process lists each once, in full, with the
// inode numbers a lookup gives and the same again next time; find walks
// the whole tree; imgcache ls lists the catalog in name order, as JSON or
// a table, whole or by --prefix and --limit, from the daemon and, once
// unmounted, from the index.
func TestLargeDirectoryAndStreamingList(t *testing.T) {
	need(t, "ls", "find", "stat", "cat")
	const n = 20000
	root := t.TempDir()
	names := scaleImages(t, root, n)
	var big []string
	for _, name := range names {
		if base, ok := strings.CutPrefix(name, "big/"); ok {
			big = append(big, base)
		}
	}
	origin := startOrigin(t, root)
	// The origin hashes every file for its first index, which can take
	// longer than a mount waits for headers: ask for it first.
	hc := &http.Client{Timeout: 3 * time.Minute}
	resp, err := hc.Get(origin.url + ".imgcache/index.json")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	m := startMount(t, origin.url, "")

	// ls of the big directory: every name once, sorted (ls sorts; -f
	// keeps readdir's order, which is the catalog's name order too).
	for _, args := range [][]string{{m.path("big")}, {"-f", m.path("big")}} {
		got := strings.Fields(run(t, "ls", args...))
		got = slices.DeleteFunc(got, func(s string) bool { return s == "." || s == ".." })
		if !slices.Equal(got, big) {
			t.Fatalf("ls %v: %d names, want %d (first %.60q)", args, len(got), len(big), got)
		}
	}
	// Inode numbers: readdir's (ls -i) are the lookup's (stat) and stay.
	inodes := func() map[string]string {
		ino := map[string]string{}
		f := strings.Fields(run(t, "ls", "-i", m.path("big")))
		for i := 0; i+1 < len(f); i += 2 {
			ino[f[i+1]] = f[i]
		}
		return ino
	}
	first, again := inodes(), inodes()
	if len(first) != len(big) || !maps.Equal(first, again) {
		t.Fatalf("ls -i: %d names, and the second listing differs: %v", len(first), !maps.Equal(first, again))
	}
	for _, base := range []string{big[0], big[len(big)/2], big[len(big)-1]} {
		if st := strings.TrimSpace(run(t, "stat", "-c", "%i", m.path("big/"+base))); st != first[base] {
			t.Errorf("%s: stat says inode %s, readdir %s", base, st, first[base])
		}
	}
	if got := strings.Fields(run(t, "find", m.dir, "-type", "f")); len(got) != n {
		t.Fatalf("find: %d files, want %d", len(got), n)
	}
	if got := run(t, "cat", m.path("big/e-12345.img")); got != "big/e-12345.img" {
		t.Fatalf("cat big/e-12345.img: %q", got)
	}

	lsNames := func(args ...string) []string {
		var imgs []control.Image
		cliJSON(t, &imgs, append([]string{"ls", "--cache-dir", m.cacheDir}, args...)...)
		var got []string
		for _, img := range imgs {
			if img.Size != int64(len(img.Name)) {
				t.Fatalf("ls %v: %s has size %d, want %d", args, img.Name, img.Size, len(img.Name))
			}
			got = append(got, img.Name)
		}
		return got
	}
	checkLists := func(where string) {
		t.Helper()
		if got := lsNames(); !slices.Equal(got, names) {
			t.Fatalf("%s: ls --json: %d images, want %d in name order", where, len(got), len(names))
		}
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"--prefix", "big/e-0012", "--limit", "5"}, []string{"big/e-00120.img", "big/e-00121.img",
				"big/e-00122.img", "big/e-00123.img", "big/e-00124.img"}},
			{[]string{"--prefix", "big"}, names[1 : len(names)-1]},
			{[]string{"--prefix", "big-"}, []string{"big-x/y.img"}},
			{[]string{"--limit", "2"}, names[:2]},
			{[]string{"--prefix", "nothing/"}, nil},
		} {
			if got := lsNames(c.args...); !slices.Equal(got, c.want) {
				t.Errorf("%s: ls %v: %d images (%.80q), want %d", where, c.args, len(got), got, len(c.want))
			}
		}
		out := cliOK(t, "ls", "--cache-dir", m.cacheDir, "--prefix", "big/", "--limit", "3")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[3], "big/e-00002.img ") {
			t.Errorf("%s: ls --prefix big/ --limit 3:\n%s", where, out)
		}
		if bad := misaligned(out, "STATE"); bad != "" {
			t.Errorf("%s: ls --prefix big/ --limit 3: STATE not aligned in %q:\n%s", where, bad, out)
		}
		out = cliOK(t, "ls", "--cache-dir", m.cacheDir)
		if got := strings.Count(out, "\n"); got != n+1 {
			t.Errorf("%s: ls: %d lines, want %d", where, got, n+1)
		}
		if bad := misaligned(out, "STATE"); bad != "" {
			t.Errorf("%s: ls of %d images: STATE not aligned in %q", where, n, bad)
		}
	}
	checkLists("mounted")
	if r := cli(t, "ls", "--cache-dir", m.cacheDir, "--limit", "-1"); r.code != 2 || !strings.Contains(r.stderr, "limit") {
		t.Errorf("ls --limit -1: exit %d, %q; want 2 naming the flag", r.code, r.stderr)
	}
	m.unmount(t)
	checkLists("unmounted (the index)")
}

// misaligned returns the first row of a table whose cell in column col
// does not start where the header's col does (or holds a space there),
// "" if there is none.
func misaligned(table, col string) string {
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	at := strings.Index(lines[0], col)
	for _, l := range lines[1:] {
		if at < 0 || at >= len(l) || l[at] == ' ' || l[at-1] != ' ' {
			return l
		}
	}
	return ""
}
