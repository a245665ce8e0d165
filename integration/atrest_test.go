package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/control"
)

// Damage at rest: a byte of a verified image's data file changed behind
// the daemon's back (a disk fault, another program), between two mounts
// or during one. Strict mode never serves it; lazy mode does what
// docs/integrity.md says: it serves what is at rest until a check finds
// it, and checks an image whose data file changed since its last open.

// onlyDataFile is the one data file in the cache directory.
func onlyDataFile(t *testing.T, cacheDir string) string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(cacheDir, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 1 {
		t.Fatalf("data files: %v; want one", files)
	}
	return files[0]
}

// flipByte flips the lowest bit of the byte at off of file, as another
// program writing into it would.
func flipByte(t *testing.T, file string, off int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// awaitChecksums waits until the chunk checksums of name, made after its
// verdict, are recorded (a verify waits for them), so that damage done
// next is found chunk by chunk; damage before them is found by hashing
// the whole image again, and costs a fetch of all of it.
func awaitChecksums(t *testing.T, m *mount, name string) {
	t.Helper()
	var v control.VerifyResult
	cliJSON(t, &v, "verify", "--cache-dir", m.cacheDir, name)
	if len(v.Reports) != 1 || !strings.Contains(v.Reports[0].Message, "match their checksums") {
		t.Fatalf("verify %s before the damage: %+v", name, v)
	}
}

// sumWithFlips is the sha256 of file with the lowest bit of each byte at
// offs flipped.
func sumWithFlips(t *testing.T, file string, offs ...int64) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		b[o] ^= 1
	}
	return sumOf(b)
}

func TestDamageAtRestStrict(t *testing.T) {
	need(t, "getfattr", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4*mib + 123})
	want := imgs["a.img"].sha256
	u := startFaultUpstream(t, root)
	cacheDir := t.TempDir()
	flags := []string{"--verify=strict", "--scrub-interval", "0"}
	m := startMount(t, u.url, cacheDir, flags...)
	readsRight(t, m.path("a.img"), want, "verified")
	t.Logf("serve mode %s", xattrs(t, m.dir)["serve_mode"])
	m.unmount(t)

	// Between two mounts.
	data := onlyDataFile(t, cacheDir)
	flipByte(t, data, 2*mib+10)
	gets := u.getCount("a.img")
	m = startMount(t, u.url, cacheDir, flags...)
	if x := xattrs(t, m.path("a.img")); x["state"] != "verified" {
		t.Fatalf("before its first open: %v; want verified (nothing looked yet)", x)
	}
	if got := sha256sum(t, m.path("a.img")); got != want {
		t.Fatalf("strict read of an image damaged between mounts: sha256 %s, want %s (damaged: %s)",
			got, want, sumWithFlips(t, filepath.Join(root, "a.img"), 2*mib+10))
	}
	if n := u.getCount("a.img") - gets; n != 1 {
		t.Fatalf("%d GETs after the damage; want one, for the damaged chunk", n)
	}
	if !strings.Contains(m.proc.stderr.String(), "cached data damaged") {
		t.Fatal("the daemon did not log the damage")
	}
	waitUntil(t, "verified again", func() bool { return xattrs(t, m.path("a.img"))["state"] == "verified" })

	// During a mount, after the image was read and is served settled.
	readsRight(t, m.path("a.img"), want, "verified")
	flipByte(t, data, mib+3)
	gets = u.getCount("a.img")
	if got := sha256sum(t, m.path("a.img")); got != want {
		t.Fatalf("strict read of an image damaged during the mount: sha256 %s, want %s", got, want)
	}
	if n := u.getCount("a.img") - gets; n != 1 {
		t.Fatalf("%d GETs after the damage; want one, for the damaged chunk", n)
	}
	readsRight(t, m.path("a.img"), want, "verified")
}

func TestDamageAtRestLazy(t *testing.T) {
	need(t, "getfattr", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4*mib + 123})
	want := imgs["a.img"].sha256
	u := startFaultUpstream(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, u.url, cacheDir, "--scrub-interval", "0")
	readsRight(t, m.path("a.img"), want, "verified")
	m.unmount(t)

	// Between two mounts, no scrub: lazy serves what is at rest (its
	// first open after a mount is not checked).
	data := onlyDataFile(t, cacheDir)
	flipByte(t, data, 2*mib+10)
	m = startMount(t, u.url, cacheDir, "--scrub-interval", "0")
	damaged := sumWithFlips(t, filepath.Join(root, "a.img"), 2*mib+10)
	if got := sha256sum(t, m.path("a.img")); got != damaged {
		t.Fatalf("lazy read after damage between mounts: sha256 %s, want the damaged %s as documented", got, damaged)
	}

	// A change during the mount is seen at the next open, which checks
	// every chunk: both damaged chunks are dropped and fetched again.
	flipByte(t, data, mib+3)
	gets := u.getCount("a.img")
	if got := sha256sum(t, m.path("a.img")); got != want {
		t.Fatalf("lazy read after a change during the mount: sha256 %s, want %s", got, want)
	}
	if u.getCount("a.img") == gets {
		t.Fatal("the damaged chunks were not fetched again")
	}
	readsRight(t, m.path("a.img"), want, "verified")
	m.unmount(t)

	// Between two mounts, with the scrub: it finds the damage.
	flipByte(t, data, 3*mib+1)
	m = startMount(t, u.url, cacheDir, "--scrub-interval", "1s")
	waitUntil(t, "the scrub to find the damage", func() bool {
		return strings.Contains(xattrs(t, m.path("a.img"))["error"], "no longer match")
	})
	if x := xattrs(t, m.path("a.img")); x["state"] != "partial" {
		t.Fatalf("after the scrub: %v; want partial, the damaged chunk dropped", x)
	}
	readsRight(t, m.path("a.img"), want, "verified")
}

// While a reader has the image open (passthrough: go-fuse then serves
// every new open of it from the data file too), damage found at the next
// open is written over before that open is answered; if it cannot be,
// the open fails and says why.
func TestDamageAtRestWhileOpen(t *testing.T) {
	need(t, "getfattr", "sha256sum", "cat", "bash", "perl")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4*mib + 123})
	want := imgs["a.img"].sha256
	good, err := os.ReadFile(filepath.Join(root, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	u := startFaultUpstream(t, root)
	cacheDir := t.TempDir()
	m := startMount(t, u.url, cacheDir, "--verify=strict", "--scrub-interval", "0", "--retry-max", "0")
	readsRight(t, m.path("a.img"), want, "verified")
	t.Logf("serve mode %s", xattrs(t, m.dir)["serve_mode"])
	awaitChecksums(t, m, "a.img")
	h := holdOpen(t, m.path("a.img"))
	if got := h.read(t, 2*mib, mib); got != "ok "+sumOf(good[2*mib:3*mib]) {
		t.Fatalf("held read: %s", got)
	}

	data := onlyDataFile(t, cacheDir)
	flipByte(t, data, 2*mib+10)
	if got := sha256sum(t, m.path("a.img")); got != want {
		t.Fatalf("read of an image damaged while another reader has it open: sha256 %s, want %s", got, want)
	}
	if got := h.read(t, 2*mib, mib); got != "ok "+sumOf(good[2*mib:3*mib]) {
		t.Fatalf("the reader that had it open all along rereads the damaged MiB as %s", got)
	}

	// The upstream fails: the damage stays in the file, and opens fail.
	u.inject("a.img", fault{kind: statusError, status: 503})
	flipByte(t, data, 3*mib+5)
	mustFailRead(t, m.path("a.img"), "chunk 3", "no longer match", "503")
	mustFailRead(t, m.path("a.img"), "chunk 3", "no longer match", "503")
	u.clear("a.img")
	readsRight(t, m.path("a.img"), want, "verified")
	if got := h.read(t, 3*mib, mib+123); got != "ok "+sumOf(good[3*mib:]) {
		t.Fatalf("the reader that had it open all along, after the repair: %s", got)
	}
}
