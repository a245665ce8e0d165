package integration

// The reader processes of the model-based test (model_test.go).

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"
)

// reader is a process that opens an image and reads ranges of it through
// that one descriptor on request (perl: sysseek and sysread, so every
// byte comes through read(2) of the mount).
type reader struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	errs  *lockedBuffer
	mtime int64 // of the version the descriptor reads; -1 if unknown
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
	// Which version the descriptor reads: its own mtime.
	r.mtime = -1
	out, err := runErr("stat", "-L", "-c", "%Y", fmt.Sprintf("/proc/%d/fd/%s", r.cmd.Process.Pid, fd))
	if err == nil {
		fmt.Sscan(out, &r.mtime)
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
