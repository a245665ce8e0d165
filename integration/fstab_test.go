package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mount(8) runs fuse3's mount.fuse3 for type fuse.imgcache, which runs
// "imgcache SOURCE MOUNTPOINT -o OPTIONS" through /bin/sh with PATH set
// to /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; for
// type imgcache it runs /sbin/mount.imgcache. The tests put links to the
// binary under test in those places (/usr/local/sbin/imgcache,
// /usr/sbin/mount.imgcache) for their duration, holding a lock so that
// two test runs on one machine take turns.

const helperLock = "/run/lock/imgcache-integration-helper.lock"

var helperLinks = []string{"/usr/local/sbin/imgcache", "/usr/sbin/mount.imgcache"}

// installHelper links the binary under test where mount(8) looks.
func installHelper(t *testing.T) {
	t.Helper()
	need(t, "mount", "umount")
	if _, err := os.Stat("/sbin/mount.fuse3"); err != nil { // where mount(8) looks for it, whatever PATH says
		t.Fatalf("mount.fuse3 is not installed (%v); run .ci/setup (fuse3 has it)", err)
	}
	os.MkdirAll(filepath.Dir(helperLock), 0o755)
	lock, err := os.OpenFile(helperLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // after the links are gone: cleanups run last first
	for _, link := range helperLinks {
		if target, err := os.Readlink(link); err == nil && strings.Contains(target, "/imgcache-it-") {
			os.Remove(link) // left by a test run that was killed
		}
		if _, err := os.Lstat(link); err == nil {
			t.Fatalf("%s exists (an installed imgcache?): mount(8) would run it instead of the binary under test", link)
		}
		os.MkdirAll(filepath.Dir(link), 0o755)
		if err := os.Symlink(bin, link); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(link) })
	}
}

// daemonOf returns the pid of the daemon serving cacheDir (from its
// control socket) and checks it runs detached: a session of its own, in
// /, stdin on /dev/null, stdout and stderr on /dev/null or, when it has
// one, the log file (which so keeps a panic's trace).
func daemonOf(t *testing.T, cacheDir, logFile string) int {
	t.Helper()
	var st struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(run(t, bin, "stats", "--json", "--cache-dir", cacheDir)), &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopDaemon(t, st.PID) })
	sid, err := unixGetsid(st.PID)
	if err != nil || sid != st.PID {
		t.Errorf("the daemon %d is in session %d (%v), not one of its own", st.PID, sid, err)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", st.PID)); cwd != "/" {
		t.Errorf("the daemon's working directory is %q, not /", cwd)
	}
	want := []string{"/dev/null", "/dev/null", "/dev/null"}
	if logFile != "" {
		want[1], want[2] = logFile, logFile
	}
	for fd, w := range want {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", st.PID, fd)); target != w {
			t.Errorf("the daemon's fd %d is %q, not %s", fd, target, w)
		}
	}
	return st.PID
}

// stopDaemon ends a daemon that a failed test left running (with
// SIGTERM, which unmounts), if pid is still the binary under test.
func stopDaemon(t *testing.T, pid int) {
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || exe != bin {
		return
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
		return
	}
	t.Logf("stopping the daemon %d left running", pid)
	syscall.Kill(pid, syscall.SIGTERM)
	waitGone(t, pid)
}

func unixGetsid(pid int) (int, error) {
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(sid), nil
}

// waitGone waits until the process pid has exited (it is not our child:
// its status is what it logged).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("the daemon %d to exit", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// umount runs umount(8) and checks that the daemon exits 0 (its log's
// last words) and leaves nothing mounted.
func umount(t *testing.T, mnt string, pid int, logFile string) {
	t.Helper()
	run(t, "umount", mnt)
	waitGone(t, pid)
	if isMounted(t, mnt) {
		t.Fatalf("%s still mounted after umount", mnt)
	}
	if logFile == "" {
		return
	}
	b, _ := os.ReadFile(logFile)
	last := lastLine(string(b))
	if !strings.Contains(last, `msg="daemon exiting"`) || !strings.Contains(last, fmt.Sprintf("pid=%d status=0", pid)) {
		t.Fatalf("the daemon's last log line is not a clean exit:\n%s", b)
	}
}

// unmountAtCleanup unmounts mnt at the end of a test that failed with it
// mounted (lazily: the daemon exits once nothing holds the mount).
func unmountAtCleanup(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if isMounted(t, mnt) {
			runErr("umount", "--lazy", mnt)
		}
	})
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestMountTypeFuseImgcache mounts with real mount(8) and fuse3's
// mount.fuse3, the command line: it returns once the mount
// answers (a separate sha256sum reads an image at once), the options
// took effect (max_size, allow_other), the generic ones did no harm, the
// daemon runs detached and logs where log_file says; mount -a on the
// same entry again is a no-op; umount ends the daemon cleanly.
func TestMountTypeFuseImgcache(t *testing.T) {
	installHelper(t)
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"jammy.img": 3 << 20, "sub/b.img": 100 << 10})
	origin := startOrigin(t, root)
	mnt, cacheDir, logFile := t.TempDir(), filepath.Join(t.TempDir(), "cache"), filepath.Join(t.TempDir(), "imgcache.log")

	out, err := runErr("mount", "-t", "fuse.imgcache", origin.url, mnt,
		"-o", "cache_dir="+cacheDir+",max_size=20M,allow_other,log_file="+logFile+",_netdev,nofail,noatime,x-systemd.automount")
	if err != nil {
		t.Fatalf("mount -t fuse.imgcache: %v\n%s", err, out)
	}
	unmountAtCleanup(t, mnt)
	if strings.TrimSpace(out) != "" {
		t.Errorf("mount printed %q on success", out)
	}
	if got := sha256sum(t, filepath.Join(mnt, "jammy.img")); got != imgs["jammy.img"].sha256 {
		t.Fatal("jammy.img through the fstab form differs from the origin's")
	}
	info := mountInfo(t, mnt)
	for _, want := range []string{" fuse.imgcache " + origin.url + " ", "allow_other", "default_permissions", "nosuid", "nodev"} {
		if !strings.Contains(info, want) {
			t.Errorf("mountinfo has no %q: %s", want, info)
		}
	}
	pid := daemonOf(t, cacheDir, logFile)
	if stats := run(t, bin, "stats", "--json", "--cache-dir", cacheDir); !strings.Contains(stats, `"max_bytes": 20971520`) {
		t.Errorf("max_size=20M did not take: %s", stats)
	}
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), fmt.Sprintf("ready: %s mounted at %s", origin.url, mnt)) {
		t.Errorf("log_file has no ready line:\n%s", b)
	}

	// An fstab naming the same mount: mount -a finds it mounted.
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s %s fuse.imgcache cache_dir=%s,log_file=%s,_netdev,nofail 0 0\n", origin.url, mnt, cacheDir, logFile)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("mount", "-a", "-T", fstab); err != nil {
		t.Fatalf("mount -a over the mounted entry: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(logFile); strings.Count(string(b), "daemon started") != 1 {
		t.Fatalf("mount -a started another daemon:\n%s", b)
	}
	umount(t, mnt, pid, logFile)
}

// TestFstabLine mounts from an fstab line (mount -T FILE stands for
// /etc/fstab): mount(8) honours _netdev (mount -a -O no_netdev leaves the
// entry alone), mount MOUNTPOINT mounts it, and the type imgcache entry
// goes through /sbin/mount.imgcache.
func TestFstabLine(t *testing.T) {
	installHelper(t)
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20})
	origin := startOrigin(t, root)
	mnt, mnt2 := t.TempDir(), t.TempDir()
	cacheDir, cacheDir2 := filepath.Join(t.TempDir(), "c"), filepath.Join(t.TempDir(), "c")
	logFile := filepath.Join(t.TempDir(), "log")
	fstab := filepath.Join(t.TempDir(), "fstab")
	lines := fmt.Sprintf("# test\n%s %s fuse.imgcache cache_dir=%s,max_size=20M,allow_other,log_file=%s,_netdev,nofail 0 0\n"+
		"%s %s imgcache cache_dir=%s,log_file=%s,noauto 0 0\n", origin.url, mnt, cacheDir, logFile, origin.url, mnt2, cacheDir2, logFile)
	if err := os.WriteFile(fstab, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("mount", "-a", "-T", fstab, "-O", "no_netdev"); err != nil {
		t.Fatalf("mount -a -O no_netdev: %v\n%s", err, out)
	}
	if isMounted(t, mnt) || isMounted(t, mnt2) {
		t.Fatal("mount -a -O no_netdev mounted a _netdev entry (or a noauto one)")
	}
	if out, err := runErr("mount", "-T", fstab, mnt); err != nil {
		t.Fatalf("mount %s: %v\n%s", mnt, err, out)
	}
	unmountAtCleanup(t, mnt)
	if got := sha256sum(t, filepath.Join(mnt, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img differs")
	}
	pid := daemonOf(t, cacheDir, logFile)

	// Type imgcache: mount(8) runs /sbin/mount.imgcache itself.
	if out, err := runErr("mount", "-T", fstab, mnt2); err != nil {
		t.Fatalf("mount %s (type imgcache): %v\n%s", mnt2, err, out)
	}
	unmountAtCleanup(t, mnt2)
	if !strings.Contains(mountInfo(t, mnt2), " fuse.imgcache "+origin.url+" ") {
		t.Fatalf("mountinfo of the type imgcache entry: %s", mountInfo(t, mnt2))
	}
	pid2 := daemonOf(t, cacheDir2, logFile)
	if got := sha256sum(t, filepath.Join(mnt2, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img differs through mount.imgcache")
	}
	umount(t, mnt, pid, "")
	umount(t, mnt2, pid2, logFile)
}

// TestFstabSyslog: without log_file the daemon logs to syslog. The test
// is the syslog daemon: mount(8) runs in a mount namespace of its own
// whose /dev holds null, fuse and a log that leads to the test's datagram
// socket (the machine's own syslog, if any, is left alone); the mount
// lives in that namespace, read and unmounted there through nsenter.
func TestFstabSyslog(t *testing.T) {
	installHelper(t)
	need(t, "unshare", "nsenter", "mknod")
	sock := filepath.Join(t.TempDir(), "log")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	lines := make(chan string, 1000)
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := l.Read(buf)
			if err != nil {
				return
			}
			lines <- string(buf[:n])
		}
	}()
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 256 << 10})
	origin := startOrigin(t, root)
	mnt, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "c")
	if out, err := mountWithDevLog(sock, origin.url, mnt, "cache_dir="+cacheDir); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	pid := daemonOf(t, cacheDir, "")
	if got := strings.Fields(inNamespaceOf(t, pid, "sha256sum", filepath.Join(mnt, "a.img"))); len(got) == 0 || got[0] != imgs["a.img"].sha256 {
		t.Fatalf("a.img differs: %q", got)
	}
	inNamespaceOf(t, pid, "umount", mnt)
	waitGone(t, pid)

	// <30> is daemon.info: facility 3, severity 6.
	tag := fmt.Sprintf("imgcache[%d]: ", pid)
	var got []string
	deadline := time.After(time.Minute) // a bound on a hang, not a timing
	for !strings.Contains(strings.Join(got, "\n"), `msg="daemon exiting"`) {
		select {
		case l := <-lines:
			got = append(got, l)
		case <-deadline:
			t.Fatalf("no exit line in syslog:\n%s", strings.Join(got, "\n"))
		}
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"<30>", tag + `level=INFO msg="daemon started"`, tag + `level=INFO msg="imgcache: ready: ` + origin.url,
		tag + `level=INFO msg="daemon exiting" pid=` + fmt.Sprint(pid) + " status=0"} {
		if !strings.Contains(all, want) {
			t.Errorf("syslog has no %q:\n%s", want, all)
		}
	}
}

// TestFstabNoSyslog: without log_file and with nothing at /dev/log the
// mount is made all the same, and says once that the log is lost.
func TestFstabNoSyslog(t *testing.T) {
	installHelper(t)
	need(t, "unshare", "nsenter", "mknod")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 4096})
	origin := startOrigin(t, root)
	mnt, cacheDir := t.TempDir(), filepath.Join(t.TempDir(), "c")
	out, err := mountWithDevLog("", origin.url, mnt, "cache_dir="+cacheDir)
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	pid := daemonOf(t, cacheDir, "")
	const want = "imgcache: warning: no syslog daemon answers at /dev/log ("
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Errorf("mount said %q, want one line starting %q", out, want)
	}
	inNamespaceOf(t, pid, "stat", filepath.Join(mnt, "a.img"))
	inNamespaceOf(t, pid, "umount", mnt)
	waitGone(t, pid)
}

// mountWithDevLog runs mount -t fuse.imgcache in a mount namespace of its
// own whose /dev holds null, fuse and, if sock is not "", a log that leads
// to sock: the machine's syslog (if any) is left out. The mount lives in
// that namespace, as long as its daemon.
func mountWithDevLog(sock, source, mnt, opts string) (string, error) {
	script := `sock=$1; shift; mount -t tmpfs -o mode=755 none /dev && mknod -m 666 /dev/null c 1 3 &&
		mknod -m 600 /dev/fuse c 10 229 && { [ -z "$sock" ] || ln -s "$sock" /dev/log; } && exec "$@"`
	return runErr("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", sock,
		"mount", "-t", "fuse.imgcache", source, mnt, "-o", opts)
}

// inNamespaceOf runs a command in the mount namespace of the process pid.
func inNamespaceOf(t *testing.T, pid int, args ...string) string {
	t.Helper()
	return run(t, "nsenter", append([]string{"--target", fmt.Sprint(pid), "--mount"}, args...)...)
}

// TestFstabBadInput: each mistake gets one line on stderr naming it and a
// non-zero exit from mount(8), and leaves nothing mounted and no daemon.
func TestFstabBadInput(t *testing.T) {
	installHelper(t)
	need(t, "unshare", "mknod")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 4096})
	origin := startOrigin(t, root)
	for _, tc := range []struct {
		name   string
		source string
		mnt    string // "": an empty directory
		opts   string
		noFuse bool // in a namespace whose /dev has no fuse
		status int
		want   string
	}{
		{name: "unknown option", source: origin.url, opts: "bogus_option=1", status: 1,
			want: `imgcache: unknown option "bogus_option=1" (`},
		{name: "libfuse option", source: origin.url, opts: "uid=1000", status: 1, want: `imgcache: unknown option "uid=1000"`},
		{name: "bad value", source: origin.url, opts: "max_size=lots", status: 1, want: "imgcache: option max_size=lots: "},
		{name: "source not a URL", source: "images.example", status: 1,
			want: `imgcache: source "images.example" is not a URL of the images (http://, https://, oci://, oci+http://, simplestreams+http://, simplestreams+https://HOST/...)`},
		{name: "source a device", source: "/dev/sdz1", status: 1, want: `imgcache: source "/dev/sdz1" is not a URL of the images (http://, https://, oci://`},
		{name: "missing mountpoint", source: origin.url, mnt: "missing", status: 32, want: "imgcache: mountpoint: "},
		{name: "no /dev/fuse", source: origin.url, noFuse: true, status: 32, want: "imgcache: /dev/fuse is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			if tc.mnt != "" {
				mnt = filepath.Join(mnt, tc.mnt)
			}
			cacheDir, logFile := filepath.Join(t.TempDir(), "c"), filepath.Join(t.TempDir(), "log")
			opts := "log_file=" + logFile + ",cache_dir=" + cacheDir
			if tc.opts != "" {
				opts += "," + tc.opts
			}
			args := []string{"mount", "-t", "fuse.imgcache", tc.source, mnt, "-o", opts}
			if tc.noFuse {
				script := `mount -t tmpfs -o mode=755 none /dev && mknod -m 666 /dev/null c 1 3 && exec "$@"`
				args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, args...)
			}
			out, err := runErr(args[0], args[1:]...)
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != tc.status {
				t.Fatalf("exit %v, want status %d:\n%s", err, tc.status, out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Fatalf("want one line starting %q, got:\n%s", tc.want, out)
			}
			t.Logf("%s", lines[0])
			if tc.mnt == "" && isMounted(t, mnt) {
				t.Fatal("something is mounted")
			}
			if _, err := os.Stat(filepath.Join(cacheDir, "control.sock")); err == nil {
				t.Fatal("a daemon's control socket is left")
			}
			if b, err := os.ReadFile(logFile); err == nil && !strings.Contains(lastLine(string(b)), "status=1") {
				t.Fatalf("the daemon's log does not end with its failure:\n%s", b)
			}
		})
	}
}

// TestFstabAfterDaemonKilled: a daemon killed with SIGKILL leaves a dead
// mount (transport endpoint is not connected); mounting the fstab entry
// again cleans it up and serves the same cache, and umount then ends the
// new daemon cleanly.
func TestFstabAfterDaemonKilled(t *testing.T) {
	installHelper(t)
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 2 << 20})
	origin := startOrigin(t, root)
	mnt, cacheDir, logFile := t.TempDir(), filepath.Join(t.TempDir(), "c"), filepath.Join(t.TempDir(), "log")
	fstab := filepath.Join(t.TempDir(), "fstab")
	line := fmt.Sprintf("%s %s fuse.imgcache cache_dir=%s,log_file=%s,_netdev,nofail 0 0\n", origin.url, mnt, cacheDir, logFile)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr("mount", "-T", fstab, mnt); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	unmountAtCleanup(t, mnt)
	pid := daemonOf(t, cacheDir, logFile)
	if got := sha256sum(t, filepath.Join(mnt, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img differs")
	}
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	if _, err := runErr("stat", filepath.Join(mnt, "a.img")); err == nil {
		t.Fatal("the mount still answers with its daemon killed")
	}

	if out, err := runErr("mount", "-T", fstab, mnt); err != nil {
		t.Fatalf("mount over the dead mount: %v\n%s", err, out)
	}
	pid2 := daemonOf(t, cacheDir, logFile)
	if got := sha256sum(t, filepath.Join(mnt, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img differs after the remount")
	}
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), "cleaning up the stale mount") {
		t.Errorf("the new daemon's log does not say it cleaned up the dead mount:\n%s", b)
	}
	umount(t, mnt, pid2, logFile)
}
