package integration

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/teststreams"
)

// pinMirrorSpec is a mirror of two products, one version each; more
// versions are published as the test goes.
func pinMirrorSpec(debianVersions ...string) teststreams.Spec {
	const MiB = 1 << 20
	return teststreams.Spec{Seed: 31, Products: []teststreams.Product{
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "default", Aliases: []string{"debian/12", "debian/bookworm"},
			Versions: debianVersions, Kind: teststreams.Container, MetaSize: MiB / 4, RootSize: 3 * MiB},
		{OS: "alpine", Release: "3.19", Arch: "amd64", Variant: "default", Aliases: []string{"alpine/3.19"},
			Versions: []string{"20240101_13:00"}, Kind: teststreams.Unified, MetaSize: MiB},
	}}
}

// itemsOf lists the paths of the items of a product's version.
func itemsOf(tree *teststreams.Tree, os, version string) []string {
	var ps []string
	for _, it := range tree.Items {
		if it.Version == version && strings.HasPrefix(it.Product, os+":") {
			ps = append(ps, it.Path)
		}
	}
	slices.Sort(ps)
	return ps
}

// A pin by alias over a simplestreams mirror keeps the newest version of
// the product complete: a version published later is pinned and fetched
// whole by the daemon, with no read, and the one before is let go.
func TestSimplestreamsPinByAliasFollowsNewVersions(t *testing.T) {
	need(t, "nginx", "getfattr")
	const v1, v2 = "20240101_05:24", "20240102_05:24"
	dir := t.TempDir()
	tree, err := teststreams.Write(dir, pinMirrorSpec(v1))
	if err != nil {
		t.Fatal(err)
	}
	up := teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{})
	m := startMount(t, "simplestreams+"+up.URL, "", "--catalog-ttl", "1h") // refreshed by SIGHUP alone
	old := itemsOf(tree, "debian", v1)
	if len(old) != 2 {
		t.Fatalf("debian %s has items %q, want 2", v1, old)
	}

	var pin struct {
		Kind, Pattern string
		Images        []string
	}
	out := run(t, bin, "pin", "--json", "--cache-dir", m.cacheDir, "--alias", "debian/12/amd64")
	if err := json.Unmarshal([]byte(out), &pin); err != nil {
		t.Fatalf("imgcache pin --json: %v\n%s", err, out)
	}
	if pin.Kind != "alias" || pin.Pattern != "debian/12/amd64" || !slices.Equal(pin.Images, old) {
		t.Fatalf("imgcache pin --alias debian/12/amd64 answered %+v, want the alias pinning %q", pin, old)
	}
	waitFetchedByPin(t, m, old)

	tree, err = teststreams.Write(dir, pinMirrorSpec(v1, v2))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil { // a reload refreshes the catalog
		t.Fatal(err)
	}
	cur := itemsOf(tree, "debian", v2)
	waitUntil(t, "the new version to be listed", func() bool {
		_, err := runErr("getfattr", "-n", "user.imgcache.pinned", m.path(cur[0]))
		return err == nil
	})
	waitFetchedByPin(t, m, cur)
	for _, p := range old { // let go: still listed and cached, no longer pinned
		x := xattrs(t, m.path(p))
		if x["pinned"] != "0" || x["state"] != "verified" {
			t.Errorf("%s, the version before: pinned %s state %s, want 0 and verified", p, x["pinned"], x["state"])
		}
	}
	for _, p := range itemsOf(tree, "alpine", "20240101_13:00") {
		if x := xattrs(t, m.path(p)); x["pinned"] != "0" || x["state"] != "absent" {
			t.Errorf("%s, of no pin: pinned %s state %s, want 0 and absent", p, x["pinned"], x["state"])
		}
	}
	var served map[string]int64
	poll(5*time.Second, func() bool { // nginx logs a request after its reply
		served = up.BytesServed()
		return served[cur[0]] >= tree.Item(cur[0]).Size && served[cur[1]] >= tree.Item(cur[1]).Size
	})
	for _, p := range cur {
		if got, want := served[p], tree.Item(p).Size; got != want {
			t.Errorf("the upstream served %d bytes of %s, want its %d once", got, p, want)
		}
	}

	var pins []struct {
		Kind, Pattern string
		Images        []string
	}
	out = run(t, bin, "pins", "--json", "--cache-dir", m.cacheDir)
	if err := json.Unmarshal([]byte(out), &pins); err != nil {
		t.Fatalf("imgcache pins --json: %v\n%s", err, out)
	}
	if len(pins) != 1 || pins[0].Kind != "alias" || !slices.Equal(pins[0].Images, cur) {
		t.Errorf("imgcache pins: %+v, want the alias pinning %q", pins, cur)
	}
	run(t, bin, "unpin", "--cache-dir", m.cacheDir, "--alias", "debian/12/amd64")
	for _, p := range cur {
		if x := xattrs(t, m.path(p)); x["pinned"] != "0" || x["state"] != "verified" {
			t.Errorf("%s after unpin: pinned %s state %s, want 0 and still verified", p, x["pinned"], x["state"])
		}
	}
}

// waitFetchedByPin waits until each of the images shows pinned and
// verified (complete, its sha256 checked), with no hit: no one read it.
func waitFetchedByPin(t *testing.T, m *mount, names []string) {
	t.Helper()
	for _, p := range names {
		var x map[string]string
		waitUntil(t, p+" to be fetched whole for its pin", func() bool {
			x = xattrs(t, m.path(p))
			return x["pinned"] == "1" && x["state"] == "verified"
		})
		if x["hits"] != "0" {
			t.Errorf("%s: %s hits, want it fetched by its pin alone", p, x["hits"])
		}
	}
}
