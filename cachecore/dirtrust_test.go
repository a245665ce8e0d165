package cachecore

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// nobody is the other local user of these tests: files planted in the
// cache directory are made theirs (chown needs root, as mounting does).
const nobody = 65534

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test plants files owned by another user (uid 65534): run it as root")
	}
}

// chownNobody gives p (not what a link points to) to the other user.
func chownNobody(t *testing.T, p string) {
	t.Helper()
	if err := os.Lchown(p, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// seededCache is a cache directory holding one fully cached image.
func seededCache(t *testing.T) (dir string, up *upstreamtest.Upstream, id string, data []byte) {
	t.Helper()
	up = newFake()
	data = randomBytes(192<<10, 7)
	up.Add("a.img", data, true)
	dir = filepath.Join(t.TempDir(), "cache")
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "a.img")
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	id = img.id
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, up, id, data
}

// wantRefused checks that err refuses the cache directory for what is at
// path, in one line that names it.
func wantRefused(t *testing.T, err error, path string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted a cache directory with %s planted", path)
	}
	var u *UnsafePathError
	if !errors.As(err, &u) || u.Path != path {
		t.Fatalf("error %q, want an UnsafePathError for %q", err, path)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\n\r") || !strings.Contains(msg, strconv.Quote(path)) {
		t.Fatalf("error %q: want one line naming %q", msg, path)
	}
	t.Log(err)
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, target, p string) {
	t.Helper()
	os.RemoveAll(p)
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// TestPlantedCacheEntriesAreRefused: whatever another user planted where
// the daemon opens files in the cache directory (before its owner ran
// chmod 700, say) is refused at start with an error naming it: the
// daemon neither writes through a link (its pid into another file) nor
// serves a file that is not its own.
func TestPlantedCacheEntriesAreRefused(t *testing.T) {
	needRoot(t)
	planted := []byte("planted bytes, not the upstream's")
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, id, other string) (refused string)
	}{
		{"lock is a link to a file of root's", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "lock")
			mustSymlink(t, filepath.Join(other, "victim"), p)
			chownNobody(t, p)
			return p
		}},
		{"data is a link to the other user's directory", func(t *testing.T, dir, id, other string) string {
			theirs := filepath.Join(other, "data")
			if err := os.Rename(filepath.Join(dir, "data"), theirs); err != nil {
				t.Fatal(err)
			}
			mustWrite(t, filepath.Join(theirs, dataName(id)), planted)
			p := filepath.Join(dir, "data")
			mustSymlink(t, theirs, p)
			chownNobody(t, p)
			return p
		}},
		{"data belongs to the other user", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data")
			chownNobody(t, p)
			return p
		}},
		{"a fan-out directory is a link", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data", id[:2])
			theirs := filepath.Join(other, "fan")
			if err := os.Rename(p, theirs); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, theirs, p)
			return p
		}},
		{"a data file swapped for the other user's", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data", dataName(id))
			os.Remove(p)
			mustWrite(t, p, planted)
			chownNobody(t, p)
			return p
		}},
		{"a data file is a link", func(t *testing.T, dir, id, other string) string {
			theirs := filepath.Join(other, "theirs")
			mustWrite(t, theirs, planted)
			p := filepath.Join(dir, "data", dataName(id))
			mustSymlink(t, theirs, p)
			return p
		}},
		{"a data file has a second name elsewhere", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data", dataName(id))
			if err := os.Link(p, filepath.Join(other, "hardlink")); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"a data file others may write", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data", dataName(id))
			if err := os.Chmod(p, 0o666); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"a data file is a named pipe", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "data", dataName(id))
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"index is a link", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "index")
			theirs := filepath.Join(other, "index")
			if err := os.Rename(p, theirs); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, theirs, p)
			return p
		}},
		{"a file in the index is a link", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "index", "MANIFEST")
			theirs := filepath.Join(other, "MANIFEST")
			if err := os.Rename(p, theirs); err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, theirs, p)
			return p
		}},
		{"a file in the index belongs to the other user", func(t *testing.T, dir, id, other string) string {
			p := filepath.Join(dir, "index", "MANIFEST")
			chownNobody(t, p)
			return p
		}},
		{"the cache directory is writable by its group", func(t *testing.T, dir, id, other string) string {
			if err := os.Chmod(dir, 0o770); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, up, id, _ := seededCache(t)
			other := t.TempDir()
			victim := filepath.Join(other, "victim")
			mustWrite(t, victim, []byte("precious\n"))
			want := tc.plant(t, dir, id, other)

			_, err := Open(Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10})
			wantRefused(t, err, want)
			if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
				t.Fatalf("the file the lock link points to now holds %q", b)
			}
		})
	}
}

// TestCacheDirPathIsTrustedAllTheWay: the way to the cache directory may
// pass only through what root or the daemon's user holds: a link that
// another user owns in a sticky directory (as in /tmp), a directory of
// theirs, or one others may write that is not sticky, could be switched
// to a directory of theirs; a link of root's in a sticky directory is
// fine.
func TestCacheDirPathIsTrustedAllTheWay(t *testing.T) {
	needRoot(t)
	up := newFake()
	up.Add("a.img", []byte("hello"), false)
	open := func(dir string) error {
		c, err := Open(Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10})
		if err == nil {
			c.Close()
		}
		return err
	}

	sticky := t.TempDir()
	if err := os.Chmod(sticky, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(sticky, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	theirLink := filepath.Join(sticky, "theirs")
	mustSymlink(t, real, theirLink)
	chownNobody(t, theirLink)
	wantRefused(t, open(theirLink), theirLink)
	wantRefused(t, open(filepath.Join(theirLink, "sub")), theirLink)

	rootLink := filepath.Join(sticky, "mine")
	mustSymlink(t, real, rootLink)
	if err := open(rootLink); err != nil {
		t.Fatalf("cache directory through root's link in a sticky directory: %v", err)
	}

	theirDir := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(theirDir, 0o755); err != nil {
		t.Fatal(err)
	}
	chownNobody(t, theirDir)
	wantRefused(t, open(filepath.Join(theirDir, "cache")), theirDir)

	shared := filepath.Join(t.TempDir(), "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(shared, 0o777) // past the umask
	wantRefused(t, open(filepath.Join(shared, "cache")), shared)
	if _, err := os.Lstat(filepath.Join(shared, "cache")); !os.IsNotExist(err) {
		t.Fatalf("a cache directory was made below a directory others may write: %v", err)
	}
}

// TestStrayEntriesInDataAreLeftAlone: a file or directory in the data
// directory under a name imgcache never makes is reported and left alone
// (start-up once panicked on data/ab/x), and the cache works.
func TestStrayEntriesInDataAreLeftAlone(t *testing.T) {
	dir, up, id, data := seededCache(t)
	victim := filepath.Join(t.TempDir(), "victim")
	mustWrite(t, victim, []byte("precious\n"))
	data0 := filepath.Join(dir, "data")
	other := "ab"
	if id[:2] == other {
		other = "cd"
	}
	strays := []string{
		filepath.Join(data0, id[:2], "x"),
		filepath.Join(data0, "x"),
		filepath.Join(data0, "zz", "deep", "er"),
		filepath.Join(data0, id[:2], other+id[2:]),
		filepath.Join(data0, id[:2], strings.ToUpper(id)),
		filepath.Join(data0, id[:2], id+".tmp"),
	}
	for _, p := range strays {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, p, []byte("stray"))
	}
	link := filepath.Join(data0, id[:2], "link")
	mustSymlink(t, victim, link)
	strays = append(strays, link)
	sub := filepath.Join(data0, id[:2], "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	c := openTest(t, dir, up, func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	defer c.Close()
	if got := readAll(t, c, mustLookup(t, c, "a.img")); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	for _, p := range strays {
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("stray %s: %v", p, err)
		}
	}
	for _, p := range []string{filepath.Join(data0, id[:2], "x"), link, sub, filepath.Join(data0, "zz")} {
		if !strings.Contains(logs.String(), strconv.Quote(p)) && !strings.Contains(logs.String(), "path="+p) {
			t.Fatalf("stray %s not reported; log:\n%s", p, logs.String())
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("the file a stray link points to now holds %q", b)
	}
}
