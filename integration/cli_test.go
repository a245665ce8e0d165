package integration

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHelpAndUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"mount", "--help"}, {"serve", "--help"}, {"demo", "--help"}, {"help", "mount"}} {
		out, err := runErr(bin, args...)
		if err != nil || !strings.Contains(out, "Usage") {
			t.Errorf("imgcache %v: err=%v\n%s", args, err, out)
		}
	}
	mountHelp, _ := runErr(bin, "mount", "--help")
	for _, flag := range []string{"--cache-dir", "--chunk-size", "--allow-other", "--debug", "--catalog-ttl", "--verify", "--scrub-interval", "--scrub-rate"} {
		if !strings.Contains(mountHelp, strings.TrimPrefix(flag, "-")) {
			t.Errorf("mount --help does not mention %s", flag)
		}
	}
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"mount", "--no-such-flag", "http://127.0.0.1:1/", "/tmp"},
		{"mount", "http://127.0.0.1:1/"},
		{"mount", "--chunk-size", "lots", "http://127.0.0.1:1/", "/tmp"},
		{"mount", "--verify", "paranoid", "http://127.0.0.1:1/", "/tmp"},
		{"mount", "--scrub-interval", "10ms", "http://127.0.0.1:1/", "/tmp"},
		{"mount", "--scrub-rate", "0", "http://127.0.0.1:1/", "/tmp"},
		{"serve"},
		{"serve", "--listen"},
	} {
		out, err := runErr(bin, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("imgcache %v: %v, want exit status 2\n%s", args, err, out)
			continue
		}
		if len(args) > 0 && strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("imgcache %v: want a one-line error, got:\n%s", args, out)
		}
	}
}

func TestSignalsUnmountCleanly(t *testing.T) {
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1000})
	origin := startOrigin(t, root)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		m := startMount(t, origin.url, "")
		m.proc.cmd.Process.Signal(sig)
		select {
		case <-m.proc.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("no exit within 20s of %v", sig)
		}
		if m.proc.err != nil {
			t.Fatalf("exit after %v: %v", sig, m.proc.err)
		}
		if isMounted(t, m.dir) {
			t.Fatalf("still mounted after %v", sig)
		}
	}
}

func TestStaleMountIsCleanedUp(t *testing.T) {
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3 << 20})
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	m.proc.kill()      // kill -9: the kernel keeps a dead mount
	t.Cleanup(func() { // if the test fails before a new daemon cleans it up
		if isMounted(t, m.dir) {
			syscall.Unmount(m.dir, syscall.MNT_DETACH)
		}
	})
	var st syscall.Statfs_t // statfs always reaches the daemon; stat may be cached
	if err := syscall.Statfs(m.dir, &st); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after kill -9, statfs of the mountpoint = %v; want ENOTCONN", err)
	}
	p := start(t, "ready: ", bin, "mount", "--cache-dir", m.cacheDir, origin.url, m.dir)
	if !strings.Contains(p.stderr.String(), "stale mount") {
		t.Errorf("the new daemon did not say it cleaned up a stale mount:\n%s", p.stderr.String())
	}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("wrong bytes after cleaning up a stale mount")
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSecondDaemonOnCacheDirFails(t *testing.T) {
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1000})
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	out, err := runErr(bin, "mount", "--cache-dir", m.cacheDir, origin.url, t.TempDir())
	if err == nil || !strings.Contains(out, "in use") {
		t.Fatalf("second daemon on one cache dir: err=%v\n%s", err, out)
	}
}
