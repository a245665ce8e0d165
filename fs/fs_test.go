package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// memUpstream returns the shared fake upstream (upstreamtest) serving
// images, each with its digest published.
func memUpstream(images map[string][]byte) *upstreamtest.Upstream {
	up := upstreamtest.New("mem://test/")
	for name, b := range images {
		up.Add(name, b, true)
	}
	return up
}

// mountTest mounts a cache over up in a temporary directory; it is
// unmounted at cleanup. The test must reach the mount only through other
// processes (this one serves it).
func mountTest(t *testing.T, up *upstreamtest.Upstream) (string, *cachecore.Cache) {
	t.Helper()
	notify := new(Notifier)
	c, err := cachecore.Open(cachecore.Config{
		Dir: t.TempDir(), Upstream: up, ChunkSize: 64 << 10, CatalogTTL: 200 * time.Millisecond,
		Notifier: notify,
	})
	if err != nil {
		t.Fatal(err)
	}
	root := NewRoot(c)
	mnt := t.TempDir()
	opts := Options()
	opts.MountOptions.DirectMount = true
	server, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	notify.Attach(root)
	t.Cleanup(func() {
		server.Unmount()
		c.Close()
	})
	return mnt, c
}

func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

func shErr(script string) (string, error) {
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	return string(out), err
}

func TestFilesDirectoriesAndAttributes(t *testing.T) {
	data := bytes.Repeat([]byte("imgcache"), 40000) // 320000 bytes: 5 chunks
	up := memUpstream(map[string][]byte{"b.img": data, "a/z.img": []byte("z"), "a/y.img": nil})
	mnt, _ := mountTest(t, up)

	if got := sh(t, "ls "+mnt); got != "a\nb.img\n" {
		t.Fatalf("ls = %q", got)
	}
	if got := sh(t, "ls "+mnt+"/a"); got != "y.img\nz.img\n" {
		t.Fatalf("ls a = %q", got)
	}
	if got := sh(t, "stat -c '%s %b %a %h %u' "+mnt+"/b.img"); got != "320000 0 444 1 0\n" {
		t.Fatalf("stat of a cold image = %q", got)
	}
	// O_DIRECT: exactly one 64 KiB chunk, no kernel read-ahead.
	sh(t, "dd if="+mnt+"/b.img of=/dev/null bs=64k skip=2 count=1 iflag=direct status=none")
	// The kernel may answer this stat from attributes it cached before the
	// read, until the notification sent at release (after dd's close
	// returns) reaches it.
	var blocks string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if blocks = sh(t, "stat -c '%b' "+mnt+"/b.img"); blocks == "128\n" || time.Now().After(deadline) {
			break
		}
	}
	if blocks != "128\n" {
		t.Fatalf("st_blocks after reading one chunk = %q, want 128", blocks)
	}
	if got := sh(t, "getfattr --absolute-names -n user.imgcache.state --only-values "+mnt+"/b.img"); got != "partial" {
		t.Fatalf("state = %q", got)
	}
	if got := sh(t, "cat "+mnt+"/b.img | sha256sum"); !strings.HasPrefix(got, hexSum(data)) {
		t.Fatalf("content differs: %s", got)
	}
	all := sh(t, "getfattr --absolute-names -d "+mnt+"/b.img")
	for _, want := range []string{`user.imgcache.hits="2"`, `user.imgcache.cached_bytes="320000"`,
		`user.imgcache.size="320000"`, `user.imgcache.digest="sha256:` + hexSum(data), `user.imgcache.source="mem://test/b.img"`,
		`user.imgcache.last_access="`} {
		if !strings.Contains(all, want) {
			t.Errorf("getfattr -d lacks %s:\n%s", want, all)
		}
	}
	if root := sh(t, "getfattr --absolute-names -d "+mnt); !strings.Contains(root, "user.imgcache.catalog_refreshed=") {
		t.Errorf("root xattrs: %s", root)
	}
}

func TestCatalogChangesShowUp(t *testing.T) {
	up := memUpstream(map[string][]byte{"old.img": []byte("v1")})
	mnt, _ := mountTest(t, up)
	if got := sh(t, "cat "+mnt+"/old.img"); got != "v1" {
		t.Fatal(got)
	}
	sh(t, "ls -l "+mnt+"/new.img 2>/dev/null; true") // a negative lookup the kernel may cache
	up.Add("old.img", []byte("version 2"), true)
	up.Add("new.img", []byte("new"), true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := shErr("cat " + mnt + "/old.img")
		b, _ := shErr("cat " + mnt + "/new.img")
		if a == "version 2" && b == "new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a catalog change: old.img=%q new.img=%q", a, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFetchFailureIsEIOAndRecorded(t *testing.T) {
	up := memUpstream(map[string][]byte{"x.img": []byte("hello")})
	up.SetFetchErr(func(string, int64, int64) error { return errors.New("upstream said no") })
	mnt, _ := mountTest(t, up)
	out, err := shErr("cat " + mnt + "/x.img")
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("cat: %v %q", err, out)
	}
	if got := sh(t, "getfattr --absolute-names -n user.imgcache.error --only-values "+mnt+"/x.img"); !strings.Contains(got, "upstream said no") {
		t.Fatalf("error attribute = %q", got)
	}
	var errno syscall.Errno = toErrno(errors.New("x"))
	if errno != syscall.EIO {
		t.Fatal(errno)
	}
}

func TestErrnoTable(t *testing.T) {
	for err, want := range map[error]syscall.Errno{
		nil:                   0,
		cachecore.ErrNotFound: syscall.ENOENT,
		&cachecore.Error{Op: "fetch", Err: context.Canceled}:  syscall.EINTR,
		&cachecore.Error{Op: "fetch", Err: errors.New("500")}: syscall.EIO,
		context.DeadlineExceeded:                              syscall.EIO,
	} {
		if got := toErrno(err); got != want {
			t.Errorf("toErrno(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestXattrTable(t *testing.T) {
	info := cachecore.Info{Hits: 12, State: cachecore.StatePartial, Source: "http://x/y"}
	n, errno := getxattr(imageXattrs, attrsOf, info, "user.imgcache.hits", nil)
	if n != 2 || errno != syscall.ERANGE {
		t.Fatalf("probe: %d %v", n, errno)
	}
	buf := make([]byte, 2)
	if n, errno := getxattr(imageXattrs, attrsOf, info, "user.imgcache.hits", buf); n != 2 || errno != 0 || string(buf) != "12" {
		t.Fatalf("read: %d %v %q", n, errno, buf)
	}
	for _, name := range []string{"user.imgcache.error", "user.imgcache.digest", "user.imgcache.nope", "security.selinux", "user.other", "hits"} {
		if _, errno := getxattr(imageXattrs, attrsOf, info, name, buf); errno != syscall.ENODATA {
			t.Errorf("%s: %v, want ENODATA", name, errno)
		}
	}
	want := "user.imgcache.hits\x00user.imgcache.state\x00user.imgcache.cached_bytes\x00user.imgcache.size\x00user.imgcache.source\x00user.imgcache.pinned\x00user.imgcache.queued\x00"
	n, errno = listxattr(imageXattrs, attrsOf, info, nil)
	if int(n) != len(want) || errno != syscall.ERANGE {
		t.Fatalf("list probe: %d %v", n, errno)
	}
	list := make([]byte, n)
	if n, errno := listxattr(imageXattrs, attrsOf, info, list); string(list[:n]) != want || errno != 0 {
		t.Fatalf("list = %q %v", list[:n], errno)
	}

	// The upstream's attributes follow, in key order; a name the table
	// has stays the table's.
	info.Attrs = map[string]string{"ftype": "squashfs", "state": "forged", "arch": "amd64"}
	if n, errno := getxattr(imageXattrs, attrsOf, info, "user.imgcache.ftype", buf[:0]); n != 8 || errno != syscall.ERANGE {
		t.Fatalf("attribute probe: %d %v", n, errno)
	}
	big := make([]byte, 64)
	for name, v := range map[string]string{"ftype": "squashfs", "arch": "amd64", "state": "partial"} {
		if n, errno := getxattr(imageXattrs, attrsOf, info, "user.imgcache."+name, big); errno != 0 || string(big[:n]) != v {
			t.Errorf("%s = %q %v, want %q", name, big[:n], errno, v)
		}
	}
	list = make([]byte, 512)
	n, _ = listxattr(imageXattrs, attrsOf, info, list)
	if got := string(list[:n]); got != want+"user.imgcache.arch\x00user.imgcache.ftype\x00" {
		t.Fatalf("list with attributes = %q", got)
	}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
