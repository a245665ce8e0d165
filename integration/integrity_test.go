package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Integrity on a real mount: each test breaks the upstream in one way
// (faultproxy_test.go) and reads with cat, sha256sum and getfattr from
// processes of their own. What must hold every time: a read either
// fails (EIO, with the reason in user.imgcache.error) or gives the
// image's true bytes, and once the upstream behaves again the image
// reads correctly.

// catCount runs cat on path and returns how many bytes it wrote, its
// error messages and its exit error.
func catCount(path string) (int64, string, error) {
	cmd := exec.Command("bash", "-c", `cat "$1" | wc -c; exit ${PIPESTATUS[0]}`, "_", path)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	n, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	return n, errb.String(), err
}

// mustFailRead checks that reading path fails with EIO and returns
// user.imgcache.error, which must mention each of want.
func mustFailRead(t *testing.T, path string, want ...string) string {
	t.Helper()
	_, msg, err := catCount(path)
	if err == nil || !strings.Contains(msg, "Input/output error") {
		t.Fatalf("cat %s: err=%v %q; want an I/O error", path, err, msg)
	}
	e := xattrs(t, path)["error"]
	for _, w := range want {
		if !strings.Contains(e, w) {
			t.Fatalf("user.imgcache.error = %q; want it to mention %q", e, w)
		}
	}
	return e
}

// readsRight checks the bytes of path and, eventually, its state.
func readsRight(t *testing.T, path, want string, state string) {
	t.Helper()
	if got := sha256sum(t, path); got != want {
		t.Fatalf("%s: sha256 %s, want %s", path, got, want)
	}
	waitUntil(t, path+" state "+state, func() bool { return xattrs(t, path)["state"] == state })
}

// flippedSum is the sha256 of the file with the lowest bit of byte at
// flipped, as corruptByte serves it.
func flippedSum(t *testing.T, file string, at int64) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 1
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

const mib = 1 << 20

// flipped is b with the lowest bit of byte i flipped, as corruptByte
// serves it.
func flipped(b []byte, i int64) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func TestFaultCorruptByteStrict(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4*mib + 123})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "", "--verify=strict")
	at := int64(3*mib + 77)
	u.inject("a.img", fault{kind: corruptByte, at: at, times: 1})

	n, msg, err := catCount(m.path("a.img"))
	if err == nil || n != 0 || !strings.Contains(msg, "Input/output error") {
		t.Fatalf("strict read of a corrupted fetch: %d bytes, err=%v %q; want EIO and no byte", n, err, msg)
	}
	x := xattrs(t, m.path("a.img"))
	bad := flippedSum(t, filepath.Join(root, "a.img"), at)
	if x["state"] != "invalid" || x["cached_bytes"] != "0" ||
		!strings.Contains(x["error"], "sha256:"+imgs["a.img"].sha256) || !strings.Contains(x["error"], "sha256:"+bad) {
		t.Fatalf("after a failed verification: %v; want state invalid, nothing cached, both digests in the error", x)
	}
	// The fault was one reply: the next open fetches again, and verifies.
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
	if e, ok := xattrs(t, m.path("a.img"))["error"]; ok {
		t.Fatalf("error left after a good fetch: %q", e)
	}
}

func TestFaultCorruptByteLazy(t *testing.T) {
	need(t, "getfattr", "sha256sum", "perl")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 4*mib + 123})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")
	at := int64(2*mib + 5)
	u.inject("a.img", fault{kind: corruptByte, at: at, times: 1})

	// A reader that has the image open all along.
	h := holdOpen(t, m.path("a.img"))

	// Lazy serves bytes as they arrive: this read sees the bad byte, and
	// the verification at completion finds it out. (Unless read-ahead
	// fetched the rest and the verdict dropped the bad copy before the
	// reader reached that byte: it then reads the true bytes. Any other
	// sum is a wrong byte served beside it: a zero read from a hole.)
	bad := flippedSum(t, filepath.Join(root, "a.img"), at)
	if got := sha256sum(t, m.path("a.img")); got != bad && got != imgs["a.img"].sha256 {
		t.Fatalf("lazy read of a corrupted fetch: sha256 %s, want the corrupted %s (or the true one)", got, bad)
	}
	waitUntil(t, "state invalid", func() bool { return xattrs(t, m.path("a.img"))["state"] == "invalid" })
	// (Chunks the reader went on to fetch after the drop may be back.)
	x := xattrs(t, m.path("a.img"))
	if !strings.Contains(x["error"], "sha256:"+imgs["a.img"].sha256) ||
		!strings.Contains(x["error"], "sha256:"+bad) {
		t.Fatalf("invalid image: %v", x)
	}
	// No byte of the bad copy is served again: not from the cache (its
	// chunks are gone), not from the kernel's page cache (dropped at once
	// for files open now, at open for the others).
	good, err := os.ReadFile(filepath.Join(root, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	// (The kernel is told right after the verdict, from another
	// goroutine: wait for it.)
	var got string
	waitUntil(t, "the open reader to reread the true bytes", func() bool {
		got = h.read(t, 2*mib, mib)
		if got != "ok "+sumOf(good[2*mib:3*mib]) && got != "ok "+sumOf(flipped(good[2*mib:3*mib], at-2*mib)) {
			t.Fatalf("the open reader rereads the corrupted MiB as %s: neither the true nor the corrupted bytes", got)
		}
		return got == "ok "+sumOf(good[2*mib:3*mib])
	})
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
}

func TestFaultTruncatedBody(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 5*mib + 1, "b.img": 2 * mib})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")

	// Every reply ends a little after its first chunk: the cache keeps
	// what came and asks again for the rest.
	u.inject("a.img", fault{kind: truncateBody, after: mib + 5000})
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")

	// Every reply ends within its first chunk: no progress, the read fails.
	u.inject("b.img", fault{kind: truncateBody, after: 1000})
	mustFailRead(t, m.path("b.img"), "ended early")
	u.clear("b.img")
	readsRight(t, m.path("b.img"), imgs["b.img"].sha256, "verified")
}

func TestFaultResetBody(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3 * mib, "b.img": 3*mib + 7})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")

	u.inject("a.img", fault{kind: resetBody, after: 1000})
	mustFailRead(t, m.path("a.img"), "reset")
	u.clear("a.img")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")

	// One reset after some chunks came through: the retry fetches the rest.
	u.inject("b.img", fault{kind: resetBody, after: mib + 100, times: 1})
	readsRight(t, m.path("b.img"), imgs["b.img"].sha256, "verified")
}

func TestFaultIgnoredRange(t *testing.T) {
	need(t, "getfattr", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 6*mib + 3})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")
	u.inject("a.img", fault{kind: ignoreRange})
	// Each reply starts at byte 0: the first is read whole (stream.go).
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
	if u.getCount("a.img") == 0 {
		t.Fatal("the image was not fetched through the fault")
	}
}

func TestFaultWrongContentRange(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3*mib + 9})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")
	u.inject("a.img", fault{kind: wrongContentRange})
	mustFailRead(t, m.path("a.img"), "Content-Range")
	if x := xattrs(t, m.path("a.img")); x["cached_bytes"] != "0" {
		t.Fatalf("bytes of a wrong range were kept: %v", x)
	}
	u.clear("a.img")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
}

func TestFaultServerErrorThenRecovery(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 2*mib + 1, "b.img": 2 * mib})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "")

	u.inject("a.img", fault{kind: statusError, status: 503})
	mustFailRead(t, m.path("a.img"), "503")
	u.clear("a.img")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")

	// Two failed replies, then the server recovers: the retries carry
	// the read over.
	u.inject("b.img", fault{kind: statusError, status: 502, times: 2})
	readsRight(t, m.path("b.img"), imgs["b.img"].sha256, "verified")
	if n := u.getCount("b.img"); n < 3 {
		t.Fatalf("%d GETs of b.img; want the two failed ones and at least one more", n)
	}
}

func TestFaultStalledBody(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 2 * mib, "b.img": 3*mib + 1})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "", "--stall-timeout", "1s")

	// Every reply stalls: each attempt is cut off, and after the retries
	// the read fails.
	u.inject("a.img", fault{kind: stallBody, after: 1000})
	mustFailRead(t, m.path("a.img"), "stalled")
	u.clear("a.img")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")

	// One reply stalls after a chunk: the retry fetches the rest.
	u.inject("b.img", fault{kind: stallBody, after: mib + 10, times: 1})
	readsRight(t, m.path("b.img"), imgs["b.img"].sha256, "verified")
}

// holder keeps an image open in a process of its own (perl) and reads
// ranges of it through that one descriptor on request.
type holder struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

const holderScript = `
open(my $fh, "<", $ARGV[0]) or die "open: $!";
$| = 1;
print "open\n";
while (my $line = <STDIN>) {
	my ($off, $n) = split " ", $line;
	sysseek($fh, $off, 0) or do { print "err seek: $!\n"; next };
	my ($buf, $err) = ("", "");
	while (length($buf) < $n) {
		my $k = sysread($fh, my $b, $n - length($buf));
		if (!defined $k) { $err = "$!"; last }
		last if $k == 0;
		$buf .= $b;
	}
	print $err ne "" ? "err $err\n" : "ok " . unpack("H*", $buf) . "\n";
}`

func holdOpen(t *testing.T, path string) *holder {
	t.Helper()
	h := &holder{cmd: exec.Command("perl", "-e", holderScript, path)}
	h.cmd.Stderr = os.Stderr
	var err error
	if h.in, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.out = bufio.NewReader(stdout)
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.in.Close(); h.cmd.Wait() })
	if l, err := h.out.ReadString('\n'); err != nil || l != "open\n" {
		t.Fatalf("holder did not open %s: %q %v", path, l, err)
	}
	return h
}

// read reads n bytes at off through the open descriptor: "ok <sha256>"
// or "err <message>".
func (h *holder) read(t *testing.T, off, n int64) string {
	t.Helper()
	fmt.Fprintf(h.in, "%d %d\n", off, n)
	l, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("holder: %v", err)
	}
	l = strings.TrimSuffix(l, "\n")
	if hx, ok := strings.CutPrefix(l, "ok "); ok {
		b, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatal(err)
		}
		return "ok " + sumOf(b)
	}
	return l
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestNewVersionUpstream(t *testing.T) {
	need(t, "getfattr", "sha256sum", "perl")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 8 * mib})
	v1, err := os.ReadFile(filepath.Join(root, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "") // the catalog is not refreshed before the change shows

	h := holdOpen(t, m.path("a.img"))
	if got := h.read(t, 0, mib); got != "ok "+sumOf(v1[:mib]) {
		t.Fatalf("first MiB through the open descriptor: %s", got)
	}
	oldDigest := xattrs(t, m.path("a.img"))["digest"]

	// A new version of the same size: only its validators and digest tell.
	v2 := make([]byte, len(v1))
	var seed [32]byte
	copy(seed[:], "version 2")
	rand.NewChaCha8(seed).Read(v2)
	u.replace(t, "a.img", v2)

	// The open descriptor reads version 1 only: an uncached range of it
	// cannot be fetched any more, so the read fails, and says why.
	if got := h.read(t, 6*mib, mib); got != "err Input/output error" {
		t.Fatalf("uncached MiB of the old version after a change upstream: %s; want an I/O error", got)
	}
	fdPath := fmt.Sprintf("/proc/%d/fd/3", h.cmd.Process.Pid)
	if e := xattrs(t, fdPath)["error"]; !strings.Contains(e, "changed upstream") {
		t.Fatalf("old version's user.imgcache.error = %q; want it to say the image changed upstream", e)
	}

	// Finding the change refreshed the catalog: new opens see the new bytes.
	waitUntil(t, "the catalog to show the new version", func() bool {
		return xattrs(t, m.path("a.img"))["digest"] != oldDigest
	})
	readsRight(t, m.path("a.img"), sumOf(v2), "verified")

	// What the old descriptor has cached is still version 1.
	if got := h.read(t, 0, mib); got != "ok "+sumOf(v1[:mib]) {
		t.Fatalf("cached MiB of the old version through the open descriptor: %s", got)
	}
}

func TestScrubQuarantinesDamageAtRest(t *testing.T) {
	need(t, "cat", "getfattr", "sha256sum", "bash")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3*mib + 11})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "", "--scrub-interval", "1s")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
	awaitChecksums(t, m, "a.img")

	// Damage a byte of the cached copy behind the daemon's back.
	var data []string
	filepath.WalkDir(filepath.Join(m.cacheDir, "data"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			data = append(data, p)
		}
		return nil
	})
	if len(data) != 1 {
		t.Fatalf("data files: %v", data)
	}
	f, err := os.OpenFile(data[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), 2*mib+10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	waitUntil(t, "the scrub to find the damage", func() bool {
		return strings.Contains(xattrs(t, m.path("a.img"))["error"], "no longer match")
	})
	x := xattrs(t, m.path("a.img"))
	if x["state"] != "partial" || x["cached_bytes"] != strconv.Itoa(2*mib+11) {
		t.Fatalf("after the scrub: %v; want state partial, the damaged chunk dropped", x)
	}

	// The image was verified once, so even a lazy read never gets a
	// wrong byte of the dropped chunk: fetched again, it must match its
	// recorded checksum before it is served.
	u.inject("a.img", fault{kind: corruptByte, at: 2*mib + 500})
	mustFailRead(t, m.path("a.img"), "chunk 2", "verified copy")
	u.clear("a.img")
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "verified")
}

func TestStrictReadsWholeImageFirst(t *testing.T) {
	need(t, "head", "getfattr")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 5*mib + 3})
	u := startFaultUpstream(t, root)
	m := startMount(t, u.url, "", "--verify=strict")
	if out := run(t, "head", "-c", "10", m.path("a.img")); len(out) != 10 {
		t.Fatalf("head -c 10 gave %d bytes", len(out))
	}
	// The first ten bytes came only once all of the image was there and verified.
	x := xattrs(t, m.path("a.img"))
	if x["state"] != "verified" || x["cached_bytes"] != strconv.FormatInt(imgs["a.img"].size, 10) {
		t.Fatalf("after a strict read of 10 bytes: %v; want the whole image verified", x)
	}
}

// TestNewVersionNginx: a server without digests, whose ETag is made of
// the mtime and size: a new file with a new mtime is a new version. With
// an HTML listing, the catalog does not ask about a file it knows (no
// HEAD per refresh): the range reply that shows the change makes it ask.
func TestNewVersionNginx(t *testing.T) {
	for _, format := range []string{"json", "html"} {
		t.Run(format, func(t *testing.T) { testNewVersionNginx(t, format == "json") })
	}
}

func testNewVersionNginx(t *testing.T, json bool) {
	need(t, "getfattr", "sha256sum", "perl")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 8 * mib})
	v1, err := os.ReadFile(filepath.Join(root, "a.img"))
	if err != nil {
		t.Fatal(err)
	}
	// Version 2 comes 30 s later in the same minute, with the same size:
	// nginx's HTML listing shows the same row, only validators differ.
	minute := time.Now().Add(-time.Hour).Truncate(time.Minute)
	if err := os.Chtimes(filepath.Join(root, "a.img"), minute, minute); err != nil {
		t.Fatal(err)
	}
	ng := startNginx(t, root, json)
	m := startMount(t, ng.url, "")
	h := holdOpen(t, m.path("a.img"))
	if got := h.read(t, 0, mib); got != "ok "+sumOf(v1[:mib]) {
		t.Fatalf("first MiB: %s", got)
	}

	v2 := make([]byte, len(v1))
	var seed [32]byte
	copy(seed[:], "nginx version 2")
	rand.NewChaCha8(seed).Read(v2)
	p := filepath.Join(root, "a.img")
	if err := os.WriteFile(p+".new", v2, 0o644); err != nil {
		t.Fatal(err)
	}
	later := minute.Add(30 * time.Second) // nginx's ETag has whole seconds
	if err := os.Chtimes(p+".new", later, later); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		t.Fatal(err)
	}

	if got := h.read(t, 6*mib, mib); got != "err Input/output error" {
		t.Fatalf("uncached MiB of the old version: %s; want an I/O error", got)
	}
	fdPath := fmt.Sprintf("/proc/%d/fd/3", h.cmd.Process.Pid)
	if e := xattrs(t, fdPath)["error"]; !strings.Contains(e, "changed upstream") {
		t.Fatalf("old version's user.imgcache.error = %q", e)
	}
	waitUntil(t, "new opens to read version 2", func() bool {
		out, err := runErr("sha256sum", m.path("a.img")) // fails until the catalog has the new version
		return err == nil && strings.HasPrefix(out, sumOf(v2))
	})
	if got := h.read(t, 0, mib); got != "ok "+sumOf(v1[:mib]) {
		t.Fatalf("cached MiB of the old version: %s", got)
	}
	if s := xattrs(t, m.path("a.img"))["state"]; s != "complete" {
		t.Fatalf("new version without a digest: state %s, want complete", s)
	}
}
