// Package integration tests imgcache the way users meet it: the real
// binary mounts a real FUSE filesystem over real upstream servers on
// 127.0.0.1 (imgcache serve, nginx), and real tools (ls, cat, sha256sum,
// getfattr, du, dd) read it from processes of their own. This process
// never serves FUSE, so it may run them freely, and reads the attributes
// itself (pkg/xattr) where getfattr is not what a test is about.
package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/xattr"
)

// bin is the imgcache binary under test, built once by TestMain (with the
// race detector when the tests run with it).
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "imgcache-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "imgcache")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "../cmd/imgcache")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building imgcache: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need fails the test (never skips it) when a tool the test drives is
// missing: .ci/run installs them all.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; run .ci/setup (the tests need fuse3, attr, nginx, squid, curl)", tool)
		}
	}
}

// proc is a background process of the test, stopped at cleanup.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error // exit status, once done is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start runs a command and waits until a line of its stderr contains
// ready (if not empty). Its output goes to the test log if the test fails.
func start(t *testing.T, ready string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(name), cmd: exec.Command(name, args...),
		stderr: &lockedBuffer{}, done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	readyc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.Write([]byte(line + "\n"))
			if ready != "" && strings.Contains(line, ready) {
				select {
				case readyc <- line:
				default:
				}
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s %s output:\n%s", p.name, strings.Join(args, " "), p.stderr.String())
		}
	})
	if ready == "" {
		return p
	}
	select {
	case <-readyc:
		return p
	case <-p.done:
		t.Fatalf("%s exited before it was ready: %v\n%s", name, p.err, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not ready within 60s:\n%s", name, p.stderr.String())
	}
	return p
}

// readyLine returns the line of stderr that contains marker.
func (p *proc) readyLine(marker string) string {
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(l, marker) {
			return l
		}
	}
	return ""
}

// stop sends SIGTERM and waits (then SIGKILL); it returns the exit error.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not exit within 20s of SIGTERM; killing it", p.name)
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// run runs a command to completion and returns its stdout; a failure
// fails the test.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runErr runs a command and returns its combined output and error.
func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("timed out after 3 minutes")
	}
}

// sha256sum runs sha256sum(1) on a file and returns the hex digest.
func sha256sum(t *testing.T, path string) string {
	t.Helper()
	f := strings.Fields(run(t, "sha256sum", path))
	if len(f) == 0 {
		t.Fatalf("sha256sum %s: no output", path)
	}
	return f[0]
}

// xattrPrefix is the namespace of the mount's attributes.
const xattrPrefix = "user.imgcache."

// ourXattrs reads the user.imgcache.* attributes of path, if any; it
// also returns every name listed.
func ourXattrs(path string) (map[string]string, []string, error) {
	var names []string
	err := againOnERANGE(func() (err error) { names, err = xattr.List(path); return err })
	if err != nil {
		return nil, nil, err
	}
	m := map[string]string{}
	for _, name := range names {
		short, ok := strings.CutPrefix(name, xattrPrefix)
		if !ok {
			continue
		}
		var v []byte
		err := againOnERANGE(func() (err error) { v, err = xattr.Get(path, name); return err })
		if errors.Is(err, xattr.ENOATTR) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		m[short] = string(v)
	}
	return m, names, nil
}

// againOnERANGE runs read again when it fails with ERANGE: pkg/xattr
// asks for the size, then reads, and a list or value that grew in between
// (an error appearing on the root) does not fit (getfattr asks again too).
func againOnERANGE(read func() error) error {
	err := read()
	for try := 0; try < 5 && errors.Is(err, syscall.ERANGE); try++ {
		err = read()
	}
	return err
}

// xattrTree reads the user.imgcache.* attributes of every file and
// directory under dir that has some: path relative to dir -> attributes.
func xattrTree(dir string) (map[string]map[string]string, error) {
	all := map[string]map[string]string{}
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		m, _, err := ourXattrs(path)
		if err != nil {
			return err
		}
		if len(m) > 0 {
			rel, _ := filepath.Rel(dir, path)
			all[rel] = m
		}
		return nil
	})
	return all, err
}

// xattrs reads the user.imgcache.* attributes of path with
// listxattr(2) and getxattr(2) (pkg/xattr): raw bytes, names without the
// prefix. An attribute that has no value now is absent from the map
// (told apart from an empty value): left out of the list, or ENODATA when
// it went between the list and the read. Any other failure fails the test, and so does a path with none of ours (every
// image and the root have some): an assertion that an attribute is
// absent must not pass on a path that is not in the mount.
func xattrs(t *testing.T, path string) map[string]string {
	t.Helper()
	m, names, err := ourXattrs(path)
	if err != nil {
		t.Fatalf("reading the attributes of %s: %v", path, err)
	}
	if len(m) == 0 {
		t.Fatalf("%s has no %s* attributes (listed: %q)", path, xattrPrefix, names)
	}
	return m
}

// duBytes runs du -B1 (allocated bytes, as du shows by default).
func duBytes(t *testing.T, path string) int64 {
	t.Helper()
	out := run(t, "du", "-B1", path)
	f := strings.Fields(out)
	if len(f) == 0 {
		t.Fatalf("du -B1 %s: no output", path)
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		t.Fatalf("du -B1 %s: %q: %v", path, out, err)
	}
	return n
}

// image is a test image on disk.
type image struct {
	name   string // path relative to the served directory
	size   int64
	sha256 string
}

// makeImages writes images of the given sizes (pseudo-random bytes, seeded
// by name) under dir.
func makeImages(t *testing.T, dir string, sizes map[string]int64) map[string]image {
	t.Helper()
	imgs := map[string]image{}
	for name, size := range sizes {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		var seed [32]byte
		copy(seed[:], name)
		h := sha256.New()
		if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		imgs[name] = image{name: name, size: size, sha256: hex.EncodeToString(h.Sum(nil))}
	}
	return imgs
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	var err error
	if !poll(20*time.Second, func() bool {
		var c net.Conn
		if c, err = net.Dial("tcp", addr); err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("%s does not accept connections: %v", addr, err)
	}
}

// waitUntil waits for cond, checked every 20 ms; the test fails if it does
// not hold within 20 s. It is how tests wait: a condition, never a sleep.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll(20*time.Second, cond) {
		t.Fatalf("waited 20s for %s", what)
	}
}

// poll checks cond every 20 ms until it holds (true) or within has passed
// (false, after one last check), for callers that report a timeout their
// own way.
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
