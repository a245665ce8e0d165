package integration

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeSums writes a SHA256SUMS file for imgs in dir, as sha256sum(1)
// would (the mirror convention httpdir reads digests from).
func writeSums(t *testing.T, dir string, imgs map[string]image) {
	t.Helper()
	var b []byte
	for _, img := range imgs {
		b = fmt.Appendf(b, "%s *%s\n", img.sha256, img.name)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// An empty image whose digest a SHA256SUMS file publishes (the sha256 of
// nothing) is verified, with nothing to fetch; an image read whole is
// verified too, and the empty one reads as empty.
func TestEmptyImageWithDigestIsVerified(t *testing.T) {
	need(t, "getfattr", "sha256sum", "cat")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"empty.img": 0, "data.img": 3<<20 + 17})
	writeSums(t, root, imgs)
	up := startNginx(t, root, false)
	m := startMount(t, up.url, "")
	empty := m.path("empty.img")
	x := xattrs(t, empty)
	if x["digest"] != "sha256:"+imgs["empty.img"].sha256 {
		t.Fatalf("digest of empty.img = %q; the SHA256SUMS file was not read", x["digest"])
	}
	if x["state"] != "verified" {
		t.Errorf("state of an empty image with its digest = %q, want verified", x["state"])
	}
	if out := run(t, "cat", empty); out != "" {
		t.Errorf("cat of an empty image printed %d bytes", len(out))
	}
	if got := sha256sum(t, m.path("data.img")); got != imgs["data.img"].sha256 {
		t.Fatalf("sha256sum = %s", got)
	}
	waitUntil(t, "data.img verified", func() bool { return xattrs(t, m.path("data.img"))["state"] == "verified" })
	if s := xattrs(t, empty)["state"]; s != "verified" {
		t.Errorf("state of the empty image after reads = %q", s)
	}
}

// pythonHTTP is python3 -m http.server over a directory: a real server
// users meet that answers every Range request with 200 and the whole
// file.
type pythonHTTP struct {
	url string
	pid int
}

func startPythonHTTP(t *testing.T, root string) *pythonHTTP {
	t.Helper()
	need(t, "python3")
	port := freePort(t)
	p := start(t, "", "python3", "-m", "http.server", strconv.Itoa(port), "--bind", "127.0.0.1", "--directory", root)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr)
	return &pythonHTTP{url: "http://" + addr + "/", pid: p.cmd.Process.Pid}
}

// served is what the server has read from files so far (its rchar): the
// bytes of the images it sent, or began to send before the client closed.
func (s *pythonHTTP) served(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", s.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no rchar in /proc/%d/io", s.pid)
	return 0
}

// A server that ignores Range sends each image about once, however it is
// read: a sequential reader (before: quadratic, 31x for 256 MiB), and a
// reader of the middle of a cold image followed by a whole read, the
// second image starting as one whole reply.
func TestRangeIgnoringServerSendsEachByteOnce(t *testing.T) {
	need(t, "sha256sum", "dd", "getfattr")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 40<<20 + 5, "b.img": 24 << 20})
	srv := startPythonHTTP(t, root)
	m := startMount(t, srv.url, "")
	for _, name := range []string{"a.img", "b.img"} {
		img, path := imgs[name], m.path(name)
		before := srv.served(t)
		if name == "b.img" {
			run(t, "dd", "if="+path, "of=/dev/null", "bs=1M", "skip=16", "count=1", "status=none")
		}
		if got := sha256sum(t, path); got != img.sha256 {
			t.Fatalf("sha256sum %s = %s, want %s", name, got, img.sha256)
		}
		waitUntil(t, name+" cached whole", func() bool { return xattrs(t, path)["cached_bytes"] == strconv.FormatInt(img.size, 10) })
		sent := srv.served(t) - before
		t.Logf("%s: the server sent %d bytes for %d (%.3fx)", name, sent, img.size, float64(sent)/float64(img.size))
		if sent < img.size || float64(sent) > 1.05*float64(img.size) {
			t.Errorf("%s: the server sent %d bytes (%.2fx) for an image of %d; want at most 1.05x", name, sent, float64(sent)/float64(img.size), img.size)
		}
	}
}

// fileRead is what file -s reads of path: the sum of its reads, by strace.
func fileRead(t *testing.T, path string) int64 {
	t.Helper()
	trace := filepath.Join(t.TempDir(), "file.strace")
	run(t, "strace", "-f", "-y", "-e", "trace=read,pread64", "-o", trace, "file", "-s", path)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, "<"+path+">") {
			continue
		}
		f := strings.Fields(l)
		if k, err := strconv.ParseInt(f[len(f)-1], 10, 64); err == nil && k > 0 {
			n += k
		}
	}
	return n
}

// ext4Work mounts the ext4 image at path through a read-only loop device,
// lists it and reads every file, and returns what the loop device read of
// the image (its sectors read).
func ext4Work(t *testing.T, path string) int64 {
	t.Helper()
	dev := strings.TrimSpace(run(t, "losetup", "-r", "-f", "--show", path))
	defer runErr("losetup", "-d", dev)
	stat := "/sys/block/" + strings.TrimPrefix(dev, "/dev/") + "/stat"
	sectors := func() int64 {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(strings.Fields(string(b))[2], 10, 64)
		return n
	}
	before := sectors() // a loop device's counts outlive its attachments
	dir := t.TempDir()
	run(t, "mount", "-o", "ro,noload", dev, dir)
	run(t, "ls", "-lR", dir)
	run(t, "sh", "-c", `find "$1" -type f -exec cat {} + >/dev/null`, "sh", dir)
	run(t, "umount", dir)
	return (sectors() - before) * 512
}

// makeExt4 makes an ext4 filesystem in image holding the files of src
// (names relative to it), laid out the same on every run and machine: a
// fixed UUID and directory hash seed, and the files written in name
// order (mkfs.ext4 -d takes them in the order the source directory lists
// them, which differs between filesystems and runs, and so did what read
// through it cost: 1.29x to 2.13x of what the loop device read).
func makeExt4(t *testing.T, image, src string, files map[string]int64) {
	t.Helper()
	const id = "6b5f0c8e-1d2a-4c3b-9e7f-0a1b2c3d4e5f"
	run(t, "mkfs.ext4", "-q", "-F", "-U", id, "-E", "hash_seed="+id, image)
	names := slices.Sorted(maps.Keys(files))
	cmds := []string{}
	dirs := map[string]bool{}
	for _, name := range names {
		if d := path.Dir(name); d != "." && !dirs[d] {
			dirs[d] = true
			cmds = append(cmds, "mkdir "+d)
		}
		cmds = append(cmds, "write "+filepath.Join(src, name)+" "+name)
	}
	script := filepath.Join(t.TempDir(), "debugfs.cmds")
	if err := os.WriteFile(script, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "debugfs", "-w", "-f", script, image)
}

// Short readers fetch about what they read: file -s (7 MiB read at each end
// of an image, each in one call) and an ext4 image read through a loop
// device (mounted, listed, every file read), as bench/run.sh's short case.
// Read-ahead grows only while the reader consumes what it brought;
// before, one 7 MiB read could have 14 MiB read ahead of it. What is
// fetched past what the loop device read is mostly the kernel's own
// read-ahead on the mount (8 MiB at the end of each sequential stream).
// Three runs each, every one within 2x.
func TestShortReadersFetchWhatTheyRead(t *testing.T) {
	need(t, "file", "strace", "mkfs.ext4", "debugfs", "losetup", "mount", "umount", "find")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"big.img": 128 << 20})
	files := map[string]int64{}
	for i := range 8 {
		files[fmt.Sprintf("big%d.bin", i)] = 4 << 20
	}
	for i := range 64 {
		files[fmt.Sprintf("small/s%d.bin", i)] = 64 << 10
	}
	src := t.TempDir()
	makeImages(t, src, files)
	ext4 := filepath.Join(root, "ext4.img")
	if err := os.WriteFile(ext4, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ext4, 256<<20); err != nil {
		t.Fatal(err)
	}
	makeExt4(t, ext4, src, files)
	fileWant := fileRead(t, filepath.Join(root, "big.img"))
	ext4Want := ext4Work(t, ext4)
	if fileWant != 14<<20 || ext4Want < 36<<20 {
		t.Fatalf("on local copies: file -s read %d bytes, the ext4 work %d", fileWant, ext4Want)
	}
	up := startNginx(t, root, true)
	for i := range 3 {
		before := up.bytesServed(t)
		m := startMount(t, up.url, "")
		run(t, "file", "-s", m.path("big.img"))
		ext4Work(t, m.path("ext4.img"))
		m.unmount(t) // ends every fetch: the count is final
		var after map[string]int64
		waitUntil(t, "nginx to log the fetches", func() bool {
			after = up.bytesServed(t)
			return after["big.img"] > before["big.img"] && after["ext4.img"] > before["ext4.img"]
		})
		time.Sleep(500 * time.Millisecond) // the last requests' log lines
		after = up.bytesServed(t)
		for _, c := range []struct {
			name string
			read int64
		}{{"big.img", fileWant}, {"ext4.img", ext4Want}} {
			got := after[c.name] - before[c.name]
			t.Logf("run %d: %s: %d bytes fetched for %d read (%.2fx)", i, c.name, got, c.read, float64(got)/float64(c.read))
			if got > 2*c.read {
				t.Errorf("run %d: %s: %d bytes fetched for %d read; want at most twice", i, c.name, got, c.read)
			}
		}
	}
}
