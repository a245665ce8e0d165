package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifyManager plays systemd's side of sd_notify(3): a datagram socket
// whose address goes in $NOTIFY_SOCKET, reading each message with the
// sender's credentials as systemd does (SO_PASSCRED) to check that the
// main process sent it (NotifyAccess=main).
type notifyManager struct {
	addr string // as $NOTIFY_SOCKET spells it: a path, or "@name" for an abstract socket
	conn *net.UnixConn
	msgs chan notifyMsg
}

type notifyMsg struct {
	fields map[string]string // READY=1, STATUS=..., ...
	pid    int32             // of the sender, from SCM_CREDENTIALS
}

func (m notifyMsg) String() string {
	return fmt.Sprintf("pid %d: %v", m.pid, m.fields)
}

func newNotifyManager(t *testing.T, abstract bool) *notifyManager {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify")
	if abstract {
		addr = fmt.Sprintf("@imgcache-test-notify-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	m := &notifyManager{addr: addr, conn: conn, msgs: make(chan notifyMsg, 100)}
	go m.read()
	return m
}

func (m *notifyManager) read() {
	defer close(m.msgs)
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msg := notifyMsg{fields: map[string]string{}, pid: -1}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				msg.fields[k] = v
			}
		}
		if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, c := range cmsgs {
				if cred, err := unix.ParseUnixCredentials(&c); err == nil {
					msg.pid = cred.Pid
				}
			}
		}
		m.msgs <- msg
	}
}

// next returns the next message (failing the test after 60 s without one).
func (m *notifyManager) next(t *testing.T, what string) notifyMsg {
	t.Helper()
	select {
	case msg, ok := <-m.msgs:
		if !ok {
			t.Fatalf("notify socket closed while waiting for %s", what)
		}
		t.Logf("notify: %v", msg)
		return msg
	case <-time.After(60 * time.Second):
		t.Fatalf("no %s on the notify socket within 60s", what)
	}
	return notifyMsg{}
}

// none checks that no message came after those read: it sends a
// sentinel of its own and reads up to it (datagrams arrive in order).
func (m *notifyManager) none(t *testing.T, after string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: m.addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("SENTINEL=1")); err != nil {
		t.Fatal(err)
	}
	if msg := m.next(t, "the sentinel"); msg.fields["SENTINEL"] != "1" {
		t.Fatalf("unexpected notify message after %s: %v", after, msg)
	}
}

// monotonicUsec reads CLOCK_MONOTONIC as MONOTONIC_USEC counts it.
func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// TestNotifySocket runs imgcache mount as systemd runs a Type=notify
// service and plays the manager: READY=1 comes from the main process
// once the mount answers (a separate ls sees the images when it
// arrives), a reload (SIGHUP, as ExecReload sends it) is framed by
// RELOADING=1 with a MONOTONIC_USEC taken during it and READY=1, and
// SIGTERM (systemctl stop) or an umount from outside sends STOPPING=1
// before the daemon exits 0 leaving nothing mounted. Both kinds of
// socket address: a path, and an abstract name ("@...").
func TestNotifySocket(t *testing.T) {
	need(t, "ls", "umount")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 1 << 20, "sub/b.img": 64 << 10})
	origin := startOrigin(t, root)
	for _, tc := range []struct {
		name     string
		abstract bool
		stop     string // "SIGTERM" or "umount"
	}{
		{"path socket, systemctl stop", false, "SIGTERM"},
		{"abstract socket, umount", true, "umount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mgr := newNotifyManager(t, tc.abstract)
			mnt := t.TempDir()
			p := start(t, "", "env", "NOTIFY_SOCKET="+mgr.addr, bin, "mount", "--cache-dir", t.TempDir(), origin.url, mnt)
			pid := int32(p.cmd.Process.Pid) // env(1) execs imgcache: the same process

			ready := mgr.next(t, "READY=1")
			if ready.fields["READY"] != "1" {
				t.Fatalf("first message is not READY=1: %v", ready)
			}
			if ready.pid != pid {
				t.Fatalf("READY=1 sent by pid %d, not the main process %d (NotifyAccess=main drops it)", ready.pid, pid)
			}
			if !isMounted(t, mnt) {
				t.Fatal("READY=1 before the filesystem is mounted")
			}
			if got := strings.Fields(run(t, "ls", mnt)); strings.Join(got, " ") != "a.img sub" {
				t.Fatalf("ls at READY=1: %q", got)
			}
			if st := ready.fields["STATUS"]; !strings.Contains(st, "2 images") || !strings.Contains(st, mnt) {
				t.Fatalf("STATUS at READY=1: %q", st)
			}

			before := monotonicUsec(t)
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			reloading := mgr.next(t, "RELOADING=1")
			after := monotonicUsec(t)
			if reloading.fields["RELOADING"] != "1" || reloading.pid != pid {
				t.Fatalf("after SIGHUP: %v, want RELOADING=1 from pid %d", reloading, pid)
			}
			usec, err := strconv.ParseInt(reloading.fields["MONOTONIC_USEC"], 10, 64)
			if err != nil || usec < before || usec > after {
				t.Fatalf("MONOTONIC_USEC=%q, want a CLOCK_MONOTONIC reading between %d and %d", reloading.fields["MONOTONIC_USEC"], before, after)
			}
			if r := mgr.next(t, "READY=1 after the reload"); r.fields["READY"] != "1" || r.pid != pid {
				t.Fatalf("after RELOADING=1: %v, want READY=1 from pid %d", r, pid)
			}
			if got := strings.Fields(run(t, "ls", mnt)); len(got) != 2 {
				t.Fatalf("ls after the reload: %q", got)
			}

			switch tc.stop {
			case "SIGTERM":
				p.cmd.Process.Signal(syscall.SIGTERM)
			case "umount":
				run(t, "umount", mnt)
			}
			if s := mgr.next(t, "STOPPING=1"); s.fields["STOPPING"] != "1" || s.pid != pid {
				t.Fatalf("after %s: %v, want STOPPING=1 from pid %d", tc.stop, s, pid)
			}
			select {
			case <-p.done:
			case <-time.After(60 * time.Second):
				t.Fatalf("the daemon did not exit within 60s of %s", tc.stop)
			}
			if p.err != nil {
				t.Fatalf("the daemon exited with %v after %s", p.err, tc.stop)
			}
			if isMounted(t, mnt) {
				t.Fatalf("%s still mounted after the daemon exited", mnt)
			}
			mgr.none(t, "the daemon exited")
		})
	}
}

// TestNotifySocketFailedStart: a mount that fails never says READY=1;
// the manager sees the process exit non-zero with the reason on stderr.
func TestNotifySocketFailedStart(t *testing.T) {
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 4096})
	origin := startOrigin(t, root)
	mgr := newNotifyManager(t, true)
	missing := filepath.Join(t.TempDir(), "missing")
	out, err := runErr("env", "NOTIFY_SOCKET="+mgr.addr, bin, "mount", "--cache-dir", t.TempDir(), origin.url, missing)
	if err == nil {
		t.Fatalf("mount on a missing mountpoint succeeded:\n%s", out)
	}
	if !strings.Contains(out, missing) {
		t.Fatalf("the error does not name the mountpoint:\n%s", out)
	}
	mgr.none(t, "a failed start")
}

// TestNoFuseDevice starts a mount where /dev has no fuse device, as in a
// systemd unit with PrivateDevices=yes (a private /dev holding null,
// zero, random, ... but not fuse) or a container not given it: one line
// naming /dev/fuse and what to do, exit 1, nothing mounted and the cache
// directory not even created.
func TestNoFuseDevice(t *testing.T) {
	need(t, "unshare", "mount", "mknod")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"a.img": 4096})
	origin := startOrigin(t, root)
	mnt := t.TempDir()
	cacheDir := filepath.Join(t.TempDir(), "cache")
	// A mount namespace of its own, whose /dev is a tmpfs with only null in it.
	script := `mount -t tmpfs -o mode=755 none /dev && mknod -m 666 /dev/null c 1 3 && exec "$@"`
	out, err := runErr("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		bin, "mount", "--cache-dir", cacheDir, origin.url, mnt)
	if err == nil {
		t.Fatalf("mount without /dev/fuse succeeded:\n%s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "imgcache mount: /dev/fuse is missing") {
		t.Fatalf("want one line naming /dev/fuse, got:\n%s", out)
	}
	t.Logf("%s", lines[0])
	if isMounted(t, mnt) {
		t.Fatal("something is mounted at the mountpoint")
	}
	if _, err := os.Stat(cacheDir); !os.IsNotExist(err) {
		t.Fatalf("the cache directory was created (%v)", err)
	}
}

// unitFile is a systemd unit: section -> key -> values (a key may repeat).
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			section = strings.Trim(l, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not a setting: %q", path, l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unitFile) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// unitPath is the unit the package installs.
const unitPath = "../packaging/systemd/imgcache@.service"

// namespacing are the settings that give a unit a mount namespace of its
// own (systemd's exec_needs_mount_namespace): a FUSE mount made in it
// would be seen by the service only.
var namespacing = []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
	"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "BindPaths",
	"BindReadOnlyPaths", "TemporaryFileSystem", "ProtectKernelTunables", "ProtectKernelModules",
	"ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset", "PrivateNetwork", "PrivateIPC",
	"MountFlags", "RootDirectory", "RootImage", "MountImages", "ExtensionImages", "LogNamespace"}

// TestSystemdUnit checks the shipped unit: what it must say (Type=notify
// from the main process, the reload, /dev/fuse allowed, CAP_SYS_ADMIN
// kept, no mount namespace of its own), that systemd-analyze verify
// finds nothing to say about it, and then runs it as systemd would:
// ExecStart with the environment file's values and the instance name
// expanded, under the unit's capability bounding set, no_new_privs and
// umask, with a notify socket; ExecReload as written; SIGTERM to stop.
func TestSystemdUnit(t *testing.T) {
	need(t, "setpriv", "sha256sum", "sh")
	u := readUnit(t, unitPath)
	svc := u["Service"]
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "EnvironmentFile": "/etc/imgcache/%i.conf",
		"ExecReload": "/bin/kill -HUP $MAINPID", "DeviceAllow": "/dev/fuse rw", "NoNewPrivileges": "yes",
	} {
		if got := u.get("Service", k); got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(u.get("Service", "ExecStart"), "/usr/bin/imgcache mount ") {
		t.Errorf("ExecStart=%q does not run /usr/bin/imgcache mount", u.get("Service", "ExecStart"))
	}
	if !strings.Contains(u.get("Service", "CapabilityBoundingSet"), "CAP_SYS_ADMIN") {
		t.Errorf("CapabilityBoundingSet=%q leaves out CAP_SYS_ADMIN, which mount(2) needs", u.get("Service", "CapabilityBoundingSet"))
	}
	for _, k := range namespacing {
		if v, ok := svc[k]; ok {
			t.Errorf("%s=%v gives the unit a mount namespace of its own: its mount would be seen by it alone", k, v)
		}
	}
	if u.get("Install", "WantedBy") == "" {
		t.Error("no WantedBy= in [Install]: systemctl enable would do nothing")
	}
	if t.Failed() {
		return
	}

	verifyUnit(t)

	// Run it as systemd would.
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3 << 20})
	origin := startOrigin(t, root)
	mnt := t.TempDir()
	instance := fmt.Sprintf("it-%d", os.Getpid())
	cacheDir := filepath.Join("/var/cache/imgcache", instance) // the unit's default for the instance
	_, statErr := os.Stat("/var/cache/imgcache")
	t.Cleanup(func() {
		os.RemoveAll(cacheDir)
		if os.IsNotExist(statErr) {
			os.Remove("/var/cache/imgcache")
		}
	})
	env := map[string]string{"UPSTREAM": origin.url, "MOUNTPOINT": mnt, "FLAGS": "--catalog-ttl 1h --chunk-size 256K"}
	argv := expandExec(t, u.get("Service", "ExecStart"), instance, env)
	if argv[0] != "/usr/bin/imgcache" {
		t.Fatalf("ExecStart runs %s", argv[0])
	}
	argv[0] = bin
	caps := []string{"-all"}
	for _, c := range strings.Fields(u.get("Service", "CapabilityBoundingSet")) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	mgr := newNotifyManager(t, true)
	script := `umask "$1" && shift && exec setpriv --no-new-privs --bounding-set "$@"`
	p := start(t, "", "env", append([]string{"NOTIFY_SOCKET=" + mgr.addr, "sh", "-c", script, "sh",
		u.get("Service", "UMask"), strings.Join(caps, ",")}, argv...)...)
	pid := int32(p.cmd.Process.Pid) // env, sh and setpriv exec: the same process, as systemd's main PID
	if r := mgr.next(t, "READY=1"); r.fields["READY"] != "1" || r.pid != pid {
		t.Fatalf("first message %v, want READY=1 from the main process %d", r, pid)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon: %s", strings.Join(grepLines(string(status), "CapEff", "CapBnd", "NoNewPrivs"), "; "))
	if got := sha256sum(t, filepath.Join(mnt, "a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img read through the unit's mount differs from the origin's")
	}
	if fi, err := os.Stat(cacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory %s: %v %v, want the unit's default, mode 0700", cacheDir, fi, err)
	}
	t.Logf("serve mode under the unit's capabilities: %s", xattrs(t, mnt)["serve_mode"])

	reload := strings.ReplaceAll(u.get("Service", "ExecReload"), "$MAINPID", strconv.Itoa(int(pid)))
	if out, err := runErr("sh", "-c", reload); err != nil {
		t.Fatalf("ExecReload %q: %v\n%s", reload, err, out)
	}
	if r := mgr.next(t, "RELOADING=1"); r.fields["RELOADING"] != "1" {
		t.Fatalf("after ExecReload: %v, want RELOADING=1", r)
	}
	if r := mgr.next(t, "READY=1 after the reload"); r.fields["READY"] != "1" {
		t.Fatalf("after RELOADING=1: %v, want READY=1", r)
	}

	p.cmd.Process.Signal(syscall.SIGTERM) // systemctl stop: KillSignal= defaults to SIGTERM
	if r := mgr.next(t, "STOPPING=1"); r.fields["STOPPING"] != "1" {
		t.Fatalf("after SIGTERM: %v, want STOPPING=1", r)
	}
	if err := p.stop(); err != nil {
		t.Fatalf("the daemon exited with %v after SIGTERM", err)
	}
	if isMounted(t, mnt) {
		t.Fatal("still mounted after the service stopped")
	}
}

// expandExec turns a unit's command line into argv as systemd does for
// the forms the unit uses: %i is the instance, ${VAR} one word, $VAR
// split at white space (none if unset).
func expandExec(t *testing.T, line, instance string, env map[string]string) []string {
	t.Helper()
	var argv []string
	for _, w := range strings.Fields(strings.ReplaceAll(line, "%i", instance)) {
		switch {
		case strings.HasPrefix(w, "${") && strings.HasSuffix(w, "}"):
			argv = append(argv, env[w[2:len(w)-1]])
		case strings.HasPrefix(w, "$"):
			argv = append(argv, strings.Fields(env[w[1:]])...)
		case strings.ContainsAny(w, `$%"'\`):
			t.Fatalf("expandExec does not know %q", w)
		default:
			argv = append(argv, w)
		}
	}
	return argv
}

func grepLines(s string, prefixes ...string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
	}
	return out
}

// verifyUnit runs systemd-analyze verify on the unit installed in a
// root of its own (with the binary at /usr/bin/imgcache, /bin/kill, an
// instance's environment file and the host's system units, which verify
// loads the unit's dependencies from). verify exits 0 even when it
// ignores a setting it does not know, so any output fails the test.
// Where systemd-analyze is not installed this check is skipped, said in
// the log (the unit's content is checked all the same).
func verifyUnit(t *testing.T) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("systemd-analyze is not installed (package systemd): the unit is not verified by it")
		return
	}
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "bin", "etc/systemd/system", "etc/imgcache", "lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "cp", bin, filepath.Join(root, "usr/bin/imgcache"))
	run(t, "cp", "/bin/kill", filepath.Join(root, "bin/kill"))
	run(t, "cp", unitPath, filepath.Join(root, "etc/systemd/system/"))
	run(t, "cp", "-a", "/lib/systemd/system", filepath.Join(root, "lib/systemd/"))
	conf := "UPSTREAM=http://images.example/\nMOUNTPOINT=/mnt/images\nFLAGS=--max-size 20G\n"
	if err := os.WriteFile(filepath.Join(root, "etc/imgcache/images.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// --man=no: the man page is checked in the package, not installed here.
	out, err := runErr(analyze, "verify", "--man=no", "--root="+root, "imgcache@images.service")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze verify imgcache@images.service: no complaint")
}
