package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/control"
)

// TestStatPathAsAnotherUser: imgcache stat of a file in a mount reads its
// attributes, so another user, who may read the mount (--allow-other) but
// not the daemon's socket, sees what the daemon would say of the image,
// by absolute path or relative to where they stand; the same user gets
// nowhere asking by name. A file of the same name outside a mount stays
// a name.
func TestStatPathAsAnotherUser(t *testing.T) {
	need(t, "setpriv", "head")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"ubuntu/jammy.img": 3 << 20, "b.img": 1000})
	origin := startOrigin(t, root)
	cacheDir, mnt := t.TempDir(), reachable(t, 0o755)
	p := start(t, "ready: ", bin, "mount", "--allow-other", "--cache-dir", cacheDir, origin.url, mnt)
	t.Cleanup(func() { p.stop() })
	tools := reachable(t, 0o755) // the test binary's directory is 0700
	imgcache := filepath.Join(tools, "imgcache")
	if b, err := os.ReadFile(bin); err != nil || os.WriteFile(imgcache, b, 0o755) != nil {
		t.Fatalf("copying the binary: %v", err)
	}

	run(t, "head", "-c", "1000", filepath.Join(mnt, "ubuntu/jammy.img")) // partial now, one hit
	cliOK(t, "pin", "--cache-dir", cacheDir, "b.img")
	var want control.Image
	cliJSON(t, &want, "stat", "--cache-dir", cacheDir, "ubuntu/jammy.img")
	if want.State != "partial" || want.Hits != 1 || want.Digest == "" {
		t.Fatalf("the daemon says %+v; want a partial image with a digest, one hit", want)
	}

	asNobody := func(dir string, args ...string) cliResult {
		t.Helper()
		cmd := exec.Command("setpriv", append([]string{"--reuid=" + nobodyUID, "--regid=" + nobodyUID, "--clear-groups", imgcache}, args...)...)
		cmd.Dir = dir
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := cliResult{stdout: stdout.String(), stderr: stderr.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, c := range []struct{ dir, arg string }{
		{"/", filepath.Join(mnt, "ubuntu/jammy.img")},
		{filepath.Join(mnt, "ubuntu"), "jammy.img"},
		{mnt, "./ubuntu//jammy.img"},
	} {
		r := asNobody(c.dir, "stat", "--json", c.arg)
		var got control.Image
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
			t.Fatalf("as nobody in %s: imgcache stat --json %s: exit %d, %v\n%s%s", c.dir, c.arg, r.code, err, r.stdout, r.stderr)
		}
		if got.Name != want.Name || got.Size != want.Size || got.CachedBytes != want.CachedBytes || got.State != want.State ||
			got.Hits != want.Hits || got.Pinned || got.Queued || got.Digest != want.Digest || got.Source != want.Source ||
			!got.LastAccess.Equal(want.LastAccess.Truncate(time.Second)) || !got.ModTime.Equal(want.ModTime) {
			t.Errorf("as nobody: stat of the path %s in %s says\n%+v\nthe daemon says\n%+v", c.arg, c.dir, got, want)
		}
	}
	r := asNobody("/", "stat", filepath.Join(mnt, "b.img"))
	if r.code != 0 || !strings.Contains(r.stdout, "name:") || !strings.Contains(r.stdout, "b.img") ||
		!strings.Contains(strings.Join(strings.Fields(r.stdout), " "), "pinned: yes") {
		t.Errorf("as nobody: imgcache stat %s: exit %d\n%s%s", filepath.Join(mnt, "b.img"), r.code, r.stdout, r.stderr)
	}
	if r := asNobody("/", "stat", "--cache-dir", cacheDir, "ubuntu/jammy.img"); r.code != 1 {
		t.Errorf("as nobody: a stat by name reached the daemon (exit %d):\n%s", r.code, r.stdout)
	}
	if r := asNobody("/", "stat", filepath.Join(mnt, "ubuntu")); r.code != 1 || !strings.Contains(r.stderr, "is a directory") {
		t.Errorf("as nobody: stat of a directory of the mount: exit %d, %q", r.code, r.stderr)
	}

	// In the origin's tree, where ubuntu/jammy.img is a file too, it is a name.
	cmd := exec.Command(bin, "stat", "--json", "--cache-dir", cacheDir, "ubuntu/jammy.img")
	cmd.Dir = root
	out, err := cmd.Output()
	var got control.Image
	if err != nil || json.Unmarshal(out, &got) != nil || !got.LastAccess.Equal(want.LastAccess) {
		t.Errorf("stat ubuntu/jammy.img in the origin's tree: %v\n%s\nwant the daemon's answer (last access to the nanosecond)", err, out)
	}
}
