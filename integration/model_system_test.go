package integration

// The system the model-based test (model_test.go) drives: imgcache serve
// over a directory the test publishes into, stops and restarts; the
// imgcache mount over it; reader processes; the management commands.

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/control"
)

// sequence is one run of the model against a real mount.
type sequence struct {
	t        *testing.T
	m        *model
	root     string // the directory imgcache serve publishes
	addr     string // its address, the same across restarts
	upstream *proc  // nil while stopped
	mnt      *mount
	cacheDir string
	sampler  *sampler
	done     []string // the steps run, for the report

	reads, failedReads, mismatches int
	readBytes                      int64
}

func startSequence(t *testing.T, m *model) *sequence {
	s := &sequence{t: t, m: m, root: t.TempDir(), cacheDir: t.TempDir()}
	for _, im := range m.images {
		s.publish(im)
	}
	s.startUpstream()
	s.mnt = startMount(t, s.url(), s.cacheDir, m.flags...)
	s.sampler = sample(s.cacheDir)
	t.Cleanup(func() {
		if s.sampler != nil {
			s.sampler.finish()
		}
	})
	return s
}

func (s *sequence) url() string { return "http://" + s.addr + "/" }

// publish writes the image's current version as a publisher would: a new
// file renamed over the old one (a new inode, mtime, ETag and digest).
func (s *sequence) publish(im *modelImage) {
	p := filepath.Join(s.root, im.name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p+".new", im.versions[im.current()].data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		s.t.Fatal(err)
	}
}

// startUpstream starts imgcache serve: on a free port the first time,
// then on the same address, so the mount finds it again.
func (s *sequence) startUpstream() {
	listen := s.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	s.upstream = start(s.t, "serving ", bin, "serve", "--listen", listen, s.root)
	if s.addr == "" {
		line := s.upstream.readyLine("serving ")
		u := line[strings.LastIndex(line, " ")+1:]
		s.addr = strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
	}
}

func (s *sequence) stopUpstream() {
	if err := s.upstream.stop(); err != nil {
		s.t.Errorf("imgcache serve exited with %v after SIGTERM", err)
	}
	s.upstream = nil
}

// remount mounts the cache directory again, with the same flags.
func (s *sequence) remount() {
	s.mnt = startMount(s.t, s.url(), s.cacheDir, s.m.flags...)
}

// manage runs an imgcache management command on the sequence's cache.
func (s *sequence) manage(args ...string) cliResult {
	return cli(s.t, append(args, "--cache-dir", s.cacheDir)...)
}

// manageJSON runs a management command with --json that must succeed.
func (s *sequence) manageJSON(v any, args ...string) {
	s.t.Helper()
	r := s.manage(append(args, "--json")...)
	if r.code != 0 {
		s.t.Errorf("imgcache %s: exit %d: %s", strings.Join(args, " "), r.code, strings.TrimSpace(r.stderr))
		return
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		s.t.Errorf("imgcache %s --json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func (s *sequence) manageImage(cmd, name string) control.Image {
	var img control.Image
	s.manageJSON(&img, cmd, name)
	return img
}

// imageError is the image's user.imgcache.error, for reports.
func (s *sequence) imageError(im *modelImage) string {
	out, err := runErr("getfattr", "--absolute-names", "--only-values", "-n", "user.imgcache.error", s.mnt.path(im.name))
	if err != nil {
		return "no user.imgcache.error"
	}
	return "user.imgcache.error " + strings.TrimSpace(out)
}

// reader is a process that opens an image and reads ranges of it through
// that one descriptor on request (perl: sysseek and sysread, so every
// byte comes through read(2) of the mount).
type reader struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	errs   *lockedBuffer
	digest string // of the version the descriptor reads; "" if unknown
}

const readerScript = `
my $path = shift;
$| = 1;
open(my $fh, "<", $path) or do { print "fail open: $!\n"; exit 0 };
print "open " . fileno($fh) . "\n";
while (my $line = <STDIN>) {
	my ($off, $n) = split " ", $line;
	my ($buf, $err) = ("", "");
	sysseek($fh, $off, 0) or $err = "seek: $!";
	while ($err eq "" && length($buf) < $n) {
		my $k = sysread($fh, my $b, $n - length($buf));
		if (!defined $k) { $err = "$!"; last }
		last if $k == 0;
		$buf .= $b;
	}
	print(($err eq "" ? "ok " : "fail ") . unpack("H*", $buf) . " $err\n");
}`

// readerTimeout bounds one answer of a reader: a read that hangs is a
// defect, reported as such rather than hanging the test.
const readerTimeout = 2 * time.Minute

// openReader starts a reader of path; an error says the open failed.
func openReader(path string) (*reader, error) {
	r := &reader{cmd: exec.Command("perl", "-e", readerScript, path), errs: &lockedBuffer{}}
	r.cmd.Stderr = r.errs
	var err error
	if r.in, err = r.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	r.out = bufio.NewReaderSize(stdout, 1<<20)
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	l, err := r.line()
	fd, ok := strings.CutPrefix(l, "open ")
	if err != nil || !ok {
		r.close()
		if err == nil {
			err = fmt.Errorf("%s", l)
		}
		return nil, err
	}
	// Which version the descriptor reads: its own digest attribute.
	out, err := runErr("getfattr", "--absolute-names", "--only-values", "-n", "user.imgcache.digest",
		fmt.Sprintf("/proc/%d/fd/%s", r.cmd.Process.Pid, fd))
	if err == nil {
		r.digest = out
	}
	return r, nil
}

// line reads one line of the reader's answer, within readerTimeout.
func (r *reader) line() (string, error) {
	type answer struct {
		l   string
		err error
	}
	c := make(chan answer, 1)
	go func() {
		l, err := r.out.ReadString('\n')
		c <- answer{strings.TrimSuffix(l, "\n"), err}
	}()
	select {
	case a := <-c:
		if a.err != nil {
			return "", fmt.Errorf("reader ended: %v %s", a.err, r.errs.String())
		}
		return a.l, nil
	case <-time.After(readerTimeout):
		r.cmd.Process.Kill()
		return "", fmt.Errorf("no answer within %v: the read hangs", readerTimeout)
	}
}

// read reads n bytes at off: the bytes, and why the read failed (""
// when it did not; the bytes are then those read before the failure).
// err is the reader's own breakdown.
func (r *reader) read(off, n int64) (got []byte, failure string, err error) {
	if _, err := fmt.Fprintf(r.in, "%d %d\n", off, n); err != nil {
		return nil, "", err
	}
	l, err := r.line()
	if err != nil {
		return nil, "", err
	}
	f := strings.SplitN(l, " ", 3)
	if len(f) != 3 || (f[0] != "ok" && f[0] != "fail") {
		return nil, "", fmt.Errorf("reader answered %.100q", l)
	}
	if got, err = hex.DecodeString(f[1]); err != nil {
		return nil, "", err
	}
	if f[0] == "fail" {
		failure = f[2]
	}
	return got, failure, nil
}

// close ends the reader: its descriptor is closed as the process exits.
func (r *reader) close() {
	r.in.Close()
	done := make(chan struct{})
	go func() {
		r.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(readerTimeout):
		r.cmd.Process.Kill()
		<-done
	}
}

// evict runs imgcache evict NAME: a pinned image is refused, an open one
// may be (its version may be the one the catalog shows), any other is
// evicted. A release reaches the daemon after close(2) returns, and an
// unpinned image's prefetch ends its window, so "open" is retried a while.
func (s *sequence) evict(im *modelImage) {
	held := slices.ContainsFunc(s.m.opens, func(h *heldOpen) bool { return h.img == im })
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.manage("evict", im.name)
		switch {
		case im.pinned && !im.surelyPinned(): // the catalog may show a version the pin is not on
			return
		case im.pinned:
			if r.code == 0 || !strings.Contains(r.stderr, "pinned") {
				s.t.Errorf("imgcache evict of pinned %s: exit %d %q, want it refused as pinned", im.name, r.code, r.stderr)
			}
			return
		case r.code == 0:
			return
		case strings.Contains(r.stderr, "open") && (held || time.Now().Before(deadline)):
			if held {
				return
			}
			time.Sleep(100 * time.Millisecond)
		default:
			s.t.Errorf("imgcache evict %s (not pinned, not held open): exit %d %q", im.name, r.code, strings.TrimSpace(r.stderr))
			return
		}
	}
}

// evictAll runs imgcache evict --all: no pinned image is evicted.
func (s *sequence) evictAll() {
	var r control.EvictResult
	s.manageJSON(&r, "evict", "--all")
	s.noPinned("evict --all", r.Evicted)
}

// prune runs imgcache prune: no pinned image is evicted, and the usage it
// reports is within the limit.
func (s *sequence) prune() {
	var r control.PruneResult
	s.manageJSON(&r, "prune")
	s.noPinned("prune", r.Evicted)
	if r.UsageBytes > s.m.maxSize {
		s.t.Errorf("imgcache prune reports usage %d, over --max-size %d", r.UsageBytes, s.m.maxSize)
	}
}

// clean runs imgcache clean: nothing stalled for 24 h and no image failed
// verification (the upstream never lies), so nothing is removed.
func (s *sequence) clean() {
	var r control.CleanResult
	s.manageJSON(&r, "clean")
	if len(r.Removed) > 0 {
		s.t.Errorf("imgcache clean removed %v: no image is stalled or invalid", r.Removed)
	}
}

// verify runs imgcache verify [NAME]: nothing was damaged at rest.
func (s *sequence) verify(im *modelImage) {
	args := []string{"verify"}
	if im != nil {
		args = append(args, im.name)
	}
	var r control.VerifyResult
	s.manageJSON(&r, args...)
	if r.BadChunks > 0 || r.Invalid > 0 {
		s.t.Errorf("imgcache %s: %d bad chunks, %d invalid images: %+v", strings.Join(args, " "), r.BadChunks, r.Invalid, r.Reports)
	}
}

func (s *sequence) noPinned(what string, evicted []string) {
	for _, im := range s.m.images {
		if im.surelyPinned() && slices.Contains(evicted, im.name) {
			s.t.Errorf("imgcache %s evicted pinned %s", what, im.name)
		}
	}
}

// finish ends a sequence: with the upstream up and no open held, every
// image reads whole and right, verify finds nothing wrong, and the daemon
// unmounts and exits 0 on SIGTERM.
func (s *sequence) finish() {
	if !s.m.up {
		s.startUpstream()
		s.m.up = true
	}
	s.closeAll(s.m.opens)
	s.m.opens = nil
	var reads []readSpec
	for _, im := range s.m.images {
		reads = append(reads, readSpec{img: im, n: im.maxSize() + 1})
	}
	s.readAll(reads, false)
	s.verify(nil)
	s.checkInvariants()
	s.mnt.unmount(s.t)
}
