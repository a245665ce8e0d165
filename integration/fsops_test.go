package integration

import (
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestReadOnlyAndXattrProtocol(t *testing.T) {
	need(t, "touch", "rm", "mv", "mkdir", "chmod", "setfattr", "getfattr", "ln", "sh")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1 << 20, "d/b.img": 1000})
	m := startMount(t, startOrigin(t, root).url, "")
	a := m.path("a.img")

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"touch", m.path("new.img")}, "Read-only file system"},
		{[]string{"sh", "-c", "echo x >> " + a}, "Read-only file system"},
		{[]string{"rm", "-f", a}, "Read-only file system"},
		{[]string{"mv", a, m.path("c.img")}, "Read-only file system"},
		{[]string{"mkdir", m.path("newdir")}, "Read-only file system"},
		{[]string{"chmod", "0777", a}, "Read-only file system"},
		{[]string{"ln", "-s", "x", m.path("link")}, "Read-only file system"},
		{[]string{"setfattr", "-n", "user.imgcache.hits", "-v", "7", a}, "Operation not permitted"},
		{[]string{"setfattr", "-x", "user.imgcache.hits", a}, "Operation not permitted"},
		{[]string{"getfattr", "-n", "user.imgcache.nonesuch", a}, "No such attribute"},
		{[]string{"getfattr", "-n", "security.selinux", a}, "No such attribute"},
		{[]string{"getfattr", "-n", "user.imgcache.error", a}, "No such attribute"},
		{[]string{"getfattr", "-n", "user.imgcache.hits", m.path("d")}, "No such attribute"},
	} {
		out, err := runErr(c.args[0], c.args[1:]...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: err=%v output=%q; want %q", c.args, err, out, c.want)
		}
	}

	// Modes, owner and inode numbers as promised.
	var st syscall.Stat_t
	if err := syscall.Stat(a, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode != syscall.S_IFREG|0o444 || st.Uid != 0 || st.Gid != 0 || st.Size != 1<<20 {
		t.Errorf("stat a.img: mode %o uid %d size %d", st.Mode, st.Uid, st.Size)
	}
	if err := syscall.Stat(m.path("d"), &st); err != nil || st.Mode != syscall.S_IFDIR|0o555 {
		t.Errorf("stat d: mode %o err %v", st.Mode, err)
	}

	// The ERANGE protocol: a buffer one byte short gets ERANGE; a size
	// probe (empty buffer) gets the size.
	size, err := syscall.Getxattr(a, "user.imgcache.source", nil)
	if err != nil || size <= 0 {
		t.Fatalf("size probe: %d %v", size, err)
	}
	if _, err := syscall.Getxattr(a, "user.imgcache.source", make([]byte, size-1)); err != syscall.ERANGE {
		t.Fatalf("short buffer: %v, want ERANGE", err)
	}
	buf := make([]byte, size)
	if n, err := syscall.Getxattr(a, "user.imgcache.source", buf); err != nil || n != size {
		t.Fatalf("full buffer: %d %v", n, err)
	}
	lsize, err := syscall.Listxattr(a, nil)
	if err != nil || lsize == 0 {
		t.Fatalf("list probe: %d %v", lsize, err)
	}
	if _, err := syscall.Listxattr(a, make([]byte, lsize-1)); err != syscall.ERANGE {
		t.Fatalf("short list buffer: %v, want ERANGE", err)
	}
	if _, err := os.Stat(m.path("missing.img")); !os.IsNotExist(err) {
		t.Fatalf("stat of a missing name: %v", err)
	}
}

func TestInodesAreStableAcrossRemounts(t *testing.T) {
	need(t, "find")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1000, "d/b.img": 1000, "d/e/c.img": 10})
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	inodes := func() string { return run(t, "find", m.dir, "-mindepth", "1", "-printf", "%i %P\n") }
	first := inodes()
	if strings.Count(first, "\n") != 5 {
		t.Fatalf("find lists:\n%s", first)
	}
	m.unmount(t)
	m = startMount(t, origin.url, "") // a new cache directory too
	if second := inodes(); second != first {
		t.Fatalf("inode numbers changed across remounts:\n%s---\n%s", first, second)
	}
}
