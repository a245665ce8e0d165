package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestDebianPackage builds the .deb as CI and users do (bash
// packaging/build, nfpm as a Go module) and checks what dpkg-deb says of
// it: its control fields, every file it must hold with its owner, mode
// and link target, the unit as shipped, and, unpacked, a binary that
// runs; then lintian's verdict where lintian is installed (errors fail,
// warnings are logged; it is not required).
func TestDebianPackage(t *testing.T) {
	need(t, "dpkg-deb", "bash", "git")
	out := t.TempDir()
	const version = "1.2.3~it1"
	cmd := exec.Command("bash", "../packaging/build")
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION="+version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("packaging/build: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(stdout.String())
	if want := filepath.Join(out, "imgcache_"+version+"_"+runtime.GOARCH+".deb"); deb != want {
		t.Fatalf("packaging/build printed %q, want %q", deb, want)
	}

	info := run(t, "dpkg-deb", "--info", deb)
	for _, want := range []string{"Package: imgcache", "Version: " + version, "Architecture: " + runtime.GOARCH,
		"Depends: fuse3", "Section: admin", "Description: read-through FUSE cache"} {
		if !strings.Contains(info, "\n "+want) {
			t.Errorf("dpkg-deb --info has no %q:\n%s", want, info)
		}
	}

	// dpkg-deb --contents: "mode owner/group size date time ./path[ -> target]".
	files := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "--contents", deb)), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents line %q", l)
		}
		files[strings.TrimPrefix(f[5], ".")] = f[0] + " " + f[1] + strings.Join(f[6:], " ")
	}
	want := map[string]string{
		"/usr/bin/imgcache":                            "-rwxr-xr-x root/root",
		"/usr/sbin/mount.imgcache":                     "lrwxrwxrwx root/root-> ../bin/imgcache",
		"/usr/lib/systemd/system/imgcache@.service":    "-rw-r--r-- root/root",
		"/usr/share/doc/imgcache/copyright":            "-rw-r--r-- root/root",
		"/usr/share/doc/imgcache/changelog.gz":         "-rw-r--r-- root/root",
		"/usr/share/doc/imgcache/examples/images.conf": "-rw-r--r-- root/root",
		"/etc/imgcache/":                               "drwxr-xr-x root/root",
	}
	pages, _ := filepath.Glob("../docs/man/*.1")
	if len(pages) == 0 {
		t.Fatal("no man pages in docs/man")
	}
	for _, p := range pages {
		want["/usr/share/man/man1/"+filepath.Base(p)+".gz"] = "-rw-r--r-- root/root"
	}
	want["/usr/share/man/man8/mount.imgcache.8.gz"] = "-rw-r--r-- root/root" // packaging/man
	for path, attrs := range want {
		got, ok := files[path]
		switch {
		case !ok:
			t.Errorf("the package has no %s", path)
		case strings.HasPrefix(attrs, "l") && strings.HasPrefix(got, "l"):
			// dpkg-deb shows a symlink's mode as it was archived.
			if !strings.HasSuffix(got, "-> ../bin/imgcache") {
				t.Errorf("%s: %s, want a link to ../bin/imgcache", path, got)
			}
		case got != attrs:
			t.Errorf("%s: %s, want %s", path, got, attrs)
		}
	}
	for path := range files {
		if !strings.HasPrefix(path, "/usr/") && !strings.HasPrefix(path, "/etc/") {
			t.Errorf("%s is outside /usr and /etc", path)
		}
	}
	if t.Failed() {
		t.Logf("dpkg-deb --contents:\n%s", run(t, "dpkg-deb", "--contents", deb))
		return
	}

	x := t.TempDir()
	run(t, "dpkg-deb", "--extract", deb, x)
	shipped, err := os.ReadFile(filepath.Join(x, "usr/lib/systemd/system/imgcache@.service"))
	if err != nil {
		t.Fatal(err)
	}
	if repo, _ := os.ReadFile(unitPath); !bytes.Equal(shipped, repo) {
		t.Error("the unit in the package differs from packaging/systemd/imgcache@.service")
	}
	if target, err := filepath.EvalSymlinks(filepath.Join(x, "usr/sbin/mount.imgcache")); err != nil ||
		target != filepath.Join(x, "usr/bin/imgcache") {
		t.Errorf("usr/sbin/mount.imgcache resolves to %q (%v)", target, err)
	}
	// The link is mount(8)'s helper: -f checks the options and mounts nothing.
	helper := filepath.Join(x, "usr/sbin/mount.imgcache")
	if out, err := runErr(helper, "http://images.example/", t.TempDir(), "-f", "-o", "rw,max_size=1G,_netdev"); err != nil {
		t.Errorf("mount.imgcache -f: %v\n%s", err, out)
	}
	if out, err := runErr(helper, "http://images.example/", t.TempDir(), "-f", "-o", "bogus"); err == nil ||
		!strings.HasPrefix(out, `imgcache: unknown option "bogus"`) {
		t.Errorf("mount.imgcache -f -o bogus: %v\n%s", err, out)
	}
	if v := run(t, filepath.Join(x, "usr/bin/imgcache"), "version"); !strings.HasPrefix(v, "imgcache "+version+"\n") {
		t.Errorf("the packaged binary's version does not say %s:\n%s", version, v)
	}
	completion, err := os.ReadFile(filepath.Join(x, "usr/share/bash-completion/completions/imgcache"))
	if err != nil || !bytes.Contains(completion, []byte("imgcache")) {
		t.Errorf("bash completion: %v\n%.200s", err, completion)
	}
	t.Logf("%s: %s", filepath.Base(deb), strings.TrimSpace(run(t, "du", "-h", deb)))

	lintian, err := exec.LookPath("lintian")
	if err != nil {
		t.Logf("lintian is not installed: the package is not linted")
		return
	}
	lint, _ := runErr(lintian, "--allow-root", deb)
	t.Logf("lintian:\n%s", lint)
	if errs := regexp.MustCompile(`(?m)^E: .*$`).FindAllString(lint, -1); len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}
}
