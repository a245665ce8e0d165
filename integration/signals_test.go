package integration

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// TestSIGHUPReloads: SIGHUP does not kill the daemon; it reloads. The
// credentials file is read again (a rotated password works from then
// on) and the catalog is refreshed at once (an image added upstream
// shows without waiting for --catalog-ttl), and the log says so.
func TestSIGHUPReloads(t *testing.T) {
	need(t, "cat", "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20, "b.img": 1 << 20})
	origin := startOrigin(t, root)
	basic := func(cred string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(cred)) }
	var want atomic.Value
	want.Store(basic("u:old"))
	up := hookProxy(t, origin.url, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != want.Load().(string) {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return true
		}
		return false
	})
	credFile := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(credFile, []byte("u:old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, up, "", "--credentials-file", credFile, "--catalog-ttl", "1h")
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img wrong")
	}

	// The password is rotated upstream and in the file; an image added.
	want.Store(basic("u:new"))
	if err := os.WriteFile(credFile, []byte("u:new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("cat", m.path("b.img")); err == nil {
		t.Fatalf("b.img read with the old password after it was rotated: %q", out[:min(len(out), 80)])
	}
	imgs["c.img"] = makeImages(t, root, map[string]int64{"c.img": 1 << 20})["c.img"]

	if err := m.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the reload's log line", func() bool { return strings.Contains(m.proc.stderr.String(), "reloaded") })
	waitUntil(t, "c.img to show after the reload", func() bool {
		_, err := os.Stat(m.path("c.img"))
		return err == nil
	})
	for _, name := range []string{"b.img", "c.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s wrong after the reload", name)
		}
	}
	t.Logf("log: %s", strings.TrimSpace(lineWith(m.proc.stderr.String(), "reloaded")))
	m.unmount(t)
}

// TestClosedTerminalLeavesNoDeadMount runs a foreground mount on a
// terminal (a pty it has as its controlling terminal) and closes the
// terminal: the kernel sends SIGHUP and the log has nowhere to go, yet
// the mount keeps serving and a later SIGTERM unmounts it cleanly.
func TestClosedTerminalLeavesNoDeadMount(t *testing.T) {
	need(t, "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	mnt := t.TempDir()
	master, tty := openPTY(t)
	cmd := exec.Command(bin, "mount", "--cache-dir", t.TempDir(), origin.url, mnt)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	done := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
		if isMounted(t, mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	ready := make(chan struct{})
	var out lockedBuffer
	go func() {
		sc := bufio.NewScanner(master)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if strings.Contains(sc.Text(), "ready: ") {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep the terminal drained until it closes
		}
	}()
	select {
	case <-ready:
	case <-done:
		t.Fatalf("daemon exited before it was ready: %v\n%s", exitErr, out.String())
	case <-time.After(60 * time.Second):
		t.Fatal("daemon not ready within 60s")
	}

	master.Close() // the terminal goes away: SIGHUP to its session
	waitUntil(t, "the daemon to take the SIGHUP", func() bool { return !sighupPending(cmd.Process.Pid) })
	if got := sha256sum(t, filepath.Join(mnt, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img wrong after the terminal closed")
	}
	select {
	case <-done:
		t.Fatalf("the daemon died when its terminal closed (%v); mounted: %v", exitErr, isMounted(t, mnt))
	default:
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v", exitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after the daemon exited")
	}
}

// openPTY opens a pseudo-terminal: its master and its terminal side.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("TIOCGPTN: %v", e)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("TIOCSPTLCK: %v", e)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, tty
}

// sighupPending says whether a process has a SIGHUP not yet taken
// (false once it is handled, or the process is gone).
func sighupPending(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		if k == "SigPnd" || k == "ShdPnd" {
			mask, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if mask&(1<<(syscall.SIGHUP-1)) != 0 {
				return true
			}
		}
	}
	return false
}

// lineWith returns the first line of s that contains sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
