package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The other local user of these tests, who plants things in a cache
// directory they could write before its owner ran chmod 700.
const nobodyUID = "65534"

// asNobody runs a shell script as the other user.
func asNobody(t *testing.T, script string) {
	t.Helper()
	run(t, "setpriv", "--reuid="+nobodyUID, "--regid="+nobodyUID, "--clear-groups", "sh", "-c", script)
}

// reachable makes a fresh directory that the other user can reach (the
// test's own temp directories are 0700).
func reachable(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tryMount starts a mount that may be refused: it returns the mount once
// it is ready, or nil and the daemon's output once it exited.
func tryMount(t *testing.T, upstream, cacheDir string) (*mount, string) {
	t.Helper()
	mnt := t.TempDir()
	p := start(t, "", bin, "mount", "--cache-dir", cacheDir, upstream, mnt)
	exited := func() bool {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	if !poll(60*time.Second, func() bool { return exited() || p.readyLine("ready: ") != "" }) {
		t.Fatalf("imgcache mount neither ready nor exited within 60s:\n%s", p.stderr.String())
	}
	if !exited() {
		return &mount{dir: mnt, cacheDir: cacheDir, proc: p}, ""
	}
	// The last lines may still be on their way through the pipe.
	waitUntil(t, "the daemon's error", func() bool { return strings.Contains(p.stderr.String(), "imgcache") })
	return nil, p.stderr.String()
}

// wantRefusal checks that a mount was refused with one line naming path.
func wantRefusal(t *testing.T, m *mount, out, path string) {
	t.Helper()
	if m != nil {
		t.Fatalf("mount with %s planted by another user started", path)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, strconv.Quote(path)) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("refusal does not name %q in one line:\n%s", path, out)
	}
	t.Logf("refused: %s", lines[0])
}

// TestPlantedCacheDirIsRefused: another local user who could write the
// cache directory before its owner ran chmod 700 plants a link as its
// lock (to a file of root's) or as its data directory (to theirs, where
// they then swap a data file), or offers a cache directory through a link
// of theirs in a sticky directory. The daemon refuses to start, naming
// what was planted: the link's target is never written, and sha256sum
// through the mount never returns the planted bytes. Once the owner has
// removed what was planted, the cache works.
func TestPlantedCacheDirIsRefused(t *testing.T) {
	need(t, "setpriv", "sha256sum", "sh")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)

	base := reachable(t, 0o755)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	theirs := filepath.Join(base, "theirs")
	if err := os.Mkdir(theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// The mistake: a cache directory of root's that anyone could write.
	cache := filepath.Join(base, "cache")
	if err := os.Mkdir(cache, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	asNobody(t, "ln -s "+victim+" "+cache+"/lock && mkdir "+theirs+"/data && ln -s "+theirs+"/data "+cache+"/data")
	if err := os.Chmod(cache, 0o700); err != nil { // the owner's fix, too late
		t.Fatal(err)
	}

	t.Run("lock", func(t *testing.T) {
		m, out := tryMount(t, origin.url, cache)
		if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
			t.Errorf("the file the planted lock links to now holds %q", b)
		}
		wantRefusal(t, m, out, filepath.Join(cache, "lock"))
	})

	t.Run("data", func(t *testing.T) {
		if err := os.Remove(filepath.Join(cache, "lock")); err != nil {
			t.Fatal(err)
		}
		m, out := tryMount(t, origin.url, cache)
		if m != nil {
			// The attack, to its end: the data files land in the other
			// user's directory, where they swap one for their bytes.
			if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
				t.Fatalf("first read: sha256 %s", got)
			}
			m.unmount(t)
			fans, _ := filepath.Glob(filepath.Join(theirs, "data", "*", "*"))
			for _, f := range fans {
				dir, name := filepath.Dir(f), filepath.Base(f)
				asNobody(t, "mv "+dir+" "+dir+".old && mkdir "+dir+" && head -c 1048576 /dev/zero | tr '\\0' X > "+dir+"/"+name)
			}
			m, _ = tryMount(t, origin.url, cache)
			if m != nil {
				got := sha256sum(t, m.path("a.img"))
				m.unmount(t)
				if got != imgs["a.img"].sha256 {
					t.Fatalf("sha256sum through the mount gave %s, not the upstream's %s: the planted bytes were served", got, imgs["a.img"].sha256)
				}
			}
		}
		wantRefusal(t, m, out, filepath.Join(cache, "data"))
	})

	t.Run("sticky link", func(t *testing.T) {
		sticky := reachable(t, os.ModeSticky|0o777)
		real := filepath.Join(sticky, "real")
		if err := os.Mkdir(real, 0o700); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(sticky, "cache")
		asNobody(t, "ln -s "+real+" "+link)
		m, out := tryMount(t, origin.url, link)
		if m != nil {
			m.unmount(t)
		}
		wantRefusal(t, m, out, link)
	})

	t.Run("cleaned up", func(t *testing.T) {
		if err := os.Remove(filepath.Join(cache, "data")); err != nil {
			t.Fatal(err)
		}
		m := startMount(t, origin.url, cache)
		if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
			t.Fatalf("sha256 %s, want %s", got, imgs["a.img"].sha256)
		}
		m.unmount(t)
		if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
			t.Errorf("victim now holds %q", b)
		}
	})
}

// TestStrayFileInCacheDirIsIgnored: a file in the cache directory under a
// name imgcache never makes (data/ab/x) is reported in a log line and
// left alone; the mount starts and serves the upstream's bytes. (Every
// start panicked on it: slice bounds out of range in dataName.)
func TestStrayFileInCacheDirIsIgnored(t *testing.T) {
	need(t, "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	cache := filepath.Join(t.TempDir(), "cache")
	m := startMount(t, origin.url, cache)
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatalf("sha256 %s", got)
	}
	m.unmount(t)
	files, _ := filepath.Glob(filepath.Join(cache, "data", "*", "*"))
	if len(files) != 1 {
		t.Fatalf("data files %q, want one", files)
	}
	strays := []string{filepath.Join(filepath.Dir(files[0]), "x"), filepath.Join(cache, "data", "zz", "deep", "er")}
	for _, p := range strays {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("stray"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	m = startMount(t, origin.url, cache)
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatalf("sha256 %s after a restart with strays, want %s", got, imgs["a.img"].sha256)
	}
	m.unmount(t)
	log := m.proc.stderr.String()
	for _, p := range []string{strays[0], filepath.Dir(filepath.Dir(strays[1]))} {
		if !strings.Contains(log, `msg="ignoring a stray entry in the cache directory" path=`+p+"\n") {
			t.Errorf("no log line names the stray %s:\n%s", p, log)
		}
	}
	for _, p := range strays {
		if b, err := os.ReadFile(p); err != nil || string(b) != "stray" {
			t.Errorf("stray %s: %q %v, want it left alone", p, b, err)
		}
	}
}
