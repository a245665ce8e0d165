package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/teststreams"
)

// lxcMirrorSpec is a small image server: a container, a VM whose disk
// images are vmRoot bytes and a unified image, two versions each, as
// images.linuxcontainers.org lays them out.
func lxcMirrorSpec(vmRoot int64) teststreams.Spec {
	const MiB = 1 << 20
	return teststreams.Spec{Seed: 23, Products: []teststreams.Product{
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "default", Aliases: []string{"debian/12", "debian/bookworm"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: teststreams.Container, MetaSize: MiB / 4, RootSize: 3 * MiB},
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "cloud", Aliases: []string{"debian/12/cloud"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: teststreams.VM, MetaSize: MiB / 4, RootSize: vmRoot},
		{OS: "alpine", Release: "3.19", Arch: "amd64", Variant: "default", Aliases: []string{"alpine/3.19"},
			Versions: []string{"20240101_13:00", "20240102_13:00"}, Kind: teststreams.Unified, MetaSize: MiB},
	}}
}

// The walk-through: a mount over a simplestreams server is a
// mirror that LXD's own client reads, served by a web server with TLS 1.3:
// lxc lists every image of the upstream by its fingerprint and exports
// them with the upstream's bytes, fetched through the mount.
func TestSimplestreamsMirrorForLXC(t *testing.T) {
	need(t, "lxc", "nginx", "ls", "sha256sum")
	tree, err := teststreams.Write(t.TempDir(), lxcMirrorSpec(256<<20)) // a VM disk of many chunks
	if err != nil {
		t.Fatal(err)
	}
	up := teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{})
	m := startMount(t, "simplestreams+"+up.URL, "", "--allow-other") // nginx's workers read it

	if got := strings.Fields(run(t, "ls", m.path("streams/v1"))); !slices.Equal(got, []string{"images.json", "index.json"}) {
		t.Fatalf("ls streams/v1: %v", got)
	}
	for _, p := range []string{teststreams.IndexPath, teststreams.ProductsPath} {
		if got, want := sha256sum(t, m.path(p)), sha256sum(t, filepath.Join(tree.Dir, p)); got != want {
			t.Fatalf("%s through the mount differs from the upstream's", p)
		}
	}

	cert := teststreams.NewCert(t)
	mirror := teststreams.StartNginx(t, m.dir, teststreams.NginxOptions{Cert: cert})
	home := t.TempDir()
	conf := filepath.Join(home, "lxc")
	if err := os.Mkdir(conf, 0o700); err != nil { // lxc does not make it
		t.Fatal(err)
	}
	lxc := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("lxc", args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "LXD_CONF="+conf, "SSL_CERT_FILE="+cert.CAFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("lxc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	lxc("remote", "add", "mirror", strings.TrimSuffix(mirror.URL, "/"), "--protocol=simplestreams", "--public")
	lxcLists(t, lxc("image", "list", "mirror:", "--format", "json"), tree.Images)
	exports := []struct {
		alias string
		img   teststreams.Image
		flags []string
	}{
		{"debian/12", tree.Images[1], nil},
		{"debian/12/cloud", tree.Images[3], []string{"--vm"}},
		{"alpine/3.19", tree.Images[5], nil},
	}
	for _, c := range exports {
		out := t.TempDir() // an existing directory: else lxc takes the name as a file prefix
		lxc(append([]string{"image", "export", "mirror:" + c.alias, out}, c.flags...)...)
		files := []*teststreams.Item{c.img.Meta}
		if c.img.Root != nil {
			files = append(files, c.img.Root)
		}
		for _, it := range files {
			b, err := os.ReadFile(filepath.Join(out, filepath.Base(it.Path)))
			if err != nil {
				t.Fatalf("export of %s: %v", c.alias, err)
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != it.SHA256 {
				t.Fatalf("export of %s: %s differs from the upstream's", c.alias, it.Path)
			}
			// Verified as it lands; the verdict on the last chunk comes
			// from a hasher at a low priority (cachecore/lowprio.go).
			waitUntil(t, it.Path+" verified", func() bool { return xattrs(t, m.path(it.Path))["state"] == "verified" })
			x := xattrs(t, m.path(it.Path))
			if x["state"] != "verified" || x["digest"] != "sha256:"+it.SHA256 || x["ftype"] != it.FType {
				t.Fatalf("%s after lxc exported it: %v, want verified by its sha256, ftype %s", it.Path, x, it.FType)
			}
			if it != c.img.Meta && x["fingerprint"] != c.img.Fingerprint {
				t.Fatalf("%s: fingerprint %q, want LXD's %s", it.Path, x["fingerprint"], c.img.Fingerprint)
			}
		}
	}

	// The upstream sent each exported file once, whole, and each JSON
	// file once (the catalog keeps the bytes it listed).
	served := up.BytesServed()
	for _, p := range []string{teststreams.IndexPath, teststreams.ProductsPath} {
		fi, err := os.Stat(filepath.Join(tree.Dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if served[p] != fi.Size() {
			t.Fatalf("the upstream sent %d bytes of %s (%d bytes)", served[p], p, fi.Size())
		}
	}
	for _, c := range exports {
		for _, it := range []*teststreams.Item{c.img.Meta, c.img.Root} {
			if it != nil && served[it.Path] != it.Size {
				t.Fatalf("the upstream sent %d bytes of %s (%d bytes) for one export", served[it.Path], it.Path, it.Size)
			}
		}
	}

	// Offline: the upstream stops and the daemon restarts; the mirror
	// still lists every image and serves what was fetched.
	up.Stop()
	m.unmount(t)
	m = startMount(t, "simplestreams+"+up.URL, m.cacheDir, "--allow-other")
	mirror = teststreams.StartNginx(t, m.dir, teststreams.NginxOptions{Cert: cert})
	lxc("remote", "add", "offline", strings.TrimSuffix(mirror.URL, "/"), "--protocol=simplestreams", "--public")
	lxcLists(t, lxc("image", "list", "offline:", "--format", "json"), tree.Images)
	out := t.TempDir()
	lxc("image", "export", "offline:debian/12", out)
	if got := sha256sum(t, filepath.Join(out, filepath.Base(tree.Images[1].Root.Path))); got != tree.Images[1].Root.SHA256 {
		t.Fatal("offline export of debian/12 differs from the upstream's")
	}
	if x := xattrs(t, m.dir); x["catalog_stale"] == "" {
		t.Fatalf("root xattrs offline: %v, want catalog_stale", x)
	}
}

// lxcLists checks that lxc image list --format json names exactly the
// fingerprints of images.
func lxcLists(t *testing.T, out string, images []teststreams.Image) {
	t.Helper()
	var listed []struct{ Fingerprint string }
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, im := range listed {
		got = append(got, im.Fingerprint)
	}
	for _, im := range images {
		want = append(want, im.Fingerprint)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("lxc lists fingerprints\n %q\nof the mirror, want the upstream's\n %q", got, want)
	}
}

// A plain URL whose root has the streams is recognised: the mount is the
// same mirror as with simplestreams+http://.
func TestSimplestreamsPlainURL(t *testing.T) {
	need(t, "nginx", "ls", "sha256sum", "getfattr")
	tree, err := teststreams.Write(t.TempDir(), lxcMirrorSpec(2<<20))
	if err != nil {
		t.Fatal(err)
	}
	up := teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{})
	m := startMount(t, up.URL, "")
	if got := strings.Fields(run(t, "ls", m.path("streams/v1"))); !slices.Equal(got, []string{"images.json", "index.json"}) {
		t.Fatalf("ls streams/v1 of a plain URL over a simplestreams server: %v", got)
	}
	it := tree.Images[0].Root
	if got := sha256sum(t, m.path(it.Path)); got != it.SHA256 {
		t.Fatalf("%s: sha256 %s, want %s", it.Path, got, it.SHA256)
	}
	if x := xattrs(t, m.path(it.Path)); x["digest"] != "sha256:"+it.SHA256 {
		t.Fatalf("%s: %v, want its sha256 as digest", it.Path, x)
	}
}

// A product file that names an item a mirror cannot serve as named is
// refused whole: the root says why and the mount keeps its last good tree.
func TestSimplestreamsBadProductFileKeepsTheTree(t *testing.T) {
	need(t, "nginx", "getfattr", "sha256sum")
	tree, err := teststreams.Write(t.TempDir(), lxcMirrorSpec(2<<20))
	if err != nil {
		t.Fatal(err)
	}
	up := teststreams.StartNginx(t, tree.Dir, teststreams.NginxOptions{})
	m := startMount(t, "simplestreams+"+up.URL, "", "--catalog-ttl", "1s")
	good := sha256sum(t, m.path(teststreams.ProductsPath))

	p := filepath.Join(tree.Dir, teststreams.ProductsPath)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	it := tree.Images[0].Root
	bad := strings.Replace(string(b), `"`+it.Path+`"`, `"images/../../etc/passwd"`, 1)
	if bad == string(b) {
		t.Fatalf("%s does not name %s", teststreams.ProductsPath, it.Path)
	}
	if err := teststreams.WriteFile(tree.Dir, teststreams.ProductsPath, []byte(bad)); err != nil {
		t.Fatal(err)
	}
	var why string
	waitUntil(t, "the refresh to refuse the product file", func() bool {
		why = xattrs(t, m.dir)["catalog_error"]
		return why != ""
	})
	if !strings.Contains(why, "catalog refused") || !strings.Contains(why, teststreams.ProductsPath) {
		t.Fatalf("catalog_error %q: want it to name the refused file", why)
	}
	if got := sha256sum(t, m.path(teststreams.ProductsPath)); got != good {
		t.Fatal("the mount serves the refused product file")
	}
	if got := sha256sum(t, m.path(it.Path)); got != it.SHA256 {
		t.Fatalf("%s of the last good tree: sha256 %s", it.Path, got)
	}
}
