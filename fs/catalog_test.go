package fs

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// eventually runs script until it prints want (10 s at most).
func eventually(t *testing.T, script, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got, _ = shErr(script); got == want {
			return
		}
	}
	t.Fatalf("%s: %q, want %q", script, got, want)
}

// TestCatalogFilesLinksAndAttrs: through a real mount, read by other
// processes: a catalog file (Content) reads as listed without a fetch
// and a new version of it is a new inode while an open one keeps its
// bytes; the names of one digest are one inode with an honest link
// count; the upstream's attributes are xattrs (listed, ENODATA for
// others); the upstream's warnings show on the root; an image a mirror
// dropped stays, marked retired.
func TestCatalogFilesLinksAndAttrs(t *testing.T) {
	up := upstreamtest.New("mem://test/")
	up.SetRetains(true)
	v1, v2 := []byte(`{"format":"index:1.0","v":1}`), []byte(`{"format":"index:1.0","v":2}`)
	content := func(b []byte) upstream.Entry {
		return upstream.Entry{Name: "streams/v1/index.json", Size: int64(len(b)), Digest: upstreamtest.Digest(b), Content: b}
	}
	up.AddEntry(content(v1))
	blob := []byte(strings.Repeat("a disk image ", 10000))
	for _, name := range []string{"b/blobs/sha256/x", "a/t1/disk.qcow2"} {
		up.AddEntryData(upstream.Entry{Name: name, Size: int64(len(blob)), Digest: upstreamtest.Digest(blob), ByDigest: true,
			Attrs: map[string]string{"media_type": "for " + name, "ftype": "disk-kvm.img"}}, blob)
	}
	up.Add("images/old.img", []byte("an old version"), true)
	up.SetWarnings([]string{`manifest "sha256:1": over 4 MiB`, "tag t9: refused"})
	mnt, _ := mountTest(t, up)

	if got := sh(t, "cat "+mnt+"/streams/v1/index.json"); got != string(v1) {
		t.Fatalf("catalog file: %q", got)
	}
	if n := up.RequestsFor("streams/v1/index.json"); n != 0 {
		t.Fatalf("the catalog file was fetched %d times", n)
	}
	if got := sh(t, "getfattr --absolute-names -n user.imgcache.state --only-values "+mnt+"/streams/v1/index.json"); got != "verified" {
		t.Fatalf("a catalog file's state: %q", got)
	}

	a, b := mnt+"/a/t1/disk.qcow2", mnt+"/b/blobs/sha256/x"
	sa, sb := sh(t, "stat -c '%i %h' "+a), sh(t, "stat -c '%i %h' "+b)
	if sa != sb || !strings.HasSuffix(sa, " 2\n") {
		t.Fatalf("two names of a digest: %q and %q, want one inode with 2 links", sa, sb)
	}
	if mtime, _ := strconv.ParseInt(strings.TrimSpace(sh(t, "stat -c %Y "+a)), 10, 64); mtime < time.Now().Add(-time.Hour).Unix() {
		t.Errorf("an image without a modification time shows %d, want when it was first listed", mtime)
	}
	if got := sh(t, "cat "+a+" | sha256sum"); !strings.HasPrefix(got, hexSum(blob)) {
		t.Fatalf("blob: %s", got)
	}
	attrs := sh(t, "getfattr --absolute-names -d "+b)
	for _, want := range []string{`user.imgcache.media_type="for a/t1/disk.qcow2"`, `user.imgcache.ftype="disk-kvm.img"`,
		`user.imgcache.hits="1"`} {
		if !strings.Contains(attrs, want) {
			t.Errorf("getfattr -d lacks %s:\n%s", want, attrs)
		}
	}
	if out, err := shErr("getfattr --absolute-names -n user.imgcache.nope " + b); err == nil || !strings.Contains(out, "No such attribute") {
		t.Errorf("an attribute nobody set: %v %q", err, out)
	}
	if got := sh(t, "getfattr --absolute-names -n user.imgcache.catalog_warnings --only-values "+mnt); got != "manifest \"sha256:1\": over 4 MiB\ntag t9: refused" {
		t.Errorf("root catalog_warnings = %q", got)
	}

	// A reader holds v1 open while the catalog moves to v2.
	reader := exec.Command("sh", "-c", `exec 3<"$1" && echo opened && read go && cat <&3`, "sh", mnt+"/streams/v1/index.json")
	stdin, _ := reader.StdinPipe()
	stdout, _ := reader.StdoutPipe()
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "opened\n" {
		t.Fatalf("reader: %q %v", line, err)
	}
	ino1 := sh(t, "stat -c %i "+mnt+"/streams/v1/index.json")
	up.AddEntry(content(v2))
	up.Remove("images/old.img")
	eventually(t, "cat "+mnt+"/streams/v1/index.json", string(v2))
	if ino2 := sh(t, "stat -c %i "+mnt+"/streams/v1/index.json"); ino2 == ino1 {
		t.Errorf("a new version of a catalog file kept inode %s", ino1)
	}
	fmt.Fprintln(stdin)
	held, _ := io.ReadAll(out)
	if err := reader.Wait(); err != nil || string(held) != string(v1) {
		t.Fatalf("the open old version read %q, %v", held, err)
	}
	if n := up.RequestsFor("streams/v1/index.json"); n != 0 {
		t.Fatalf("the catalog file was fetched %d times", n)
	}

	// The mirror dropped images/old.img; it was never read whole, so it
	// left. Read one, drop it: it stays, retired.
	eventually(t, "test -e "+mnt+"/images/old.img || echo gone", "gone\n")
	up.Add("images/kept.img", []byte("kept bytes"), true)
	eventually(t, "cat "+mnt+"/images/kept.img", "kept bytes")
	eventually(t, "getfattr --absolute-names -n user.imgcache.state --only-values "+mnt+"/images/kept.img", "verified")
	up.Remove("images/kept.img")
	eventually(t, "getfattr --absolute-names -n user.imgcache.retired --only-values "+mnt+"/images/kept.img >/dev/null && echo retired", "retired\n")
	if got := sh(t, "cat "+mnt+"/images/kept.img"); got != "kept bytes" {
		t.Fatalf("a retired image reads %q", got)
	}
}
