package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// ociFixture is a registry holding a container image (library/alpine:3.20,
// one layer of it over 3 MiB) and a VM disk image pushed as an ORAS-style
// artifact (vm/disks:jammy, its layer titled jammy.qcow2), and what the
// test expects of them.
type ociFixture struct {
	reg   *testregistry.Registry
	disk  string                  // the qcow2 file pushed
	image testregistry.Descriptor // library/alpine:3.20's manifest
}

func startOCIFixture(t *testing.T) *ociFixture {
	t.Helper()
	testregistry.Need(t, "docker-registry", "skopeo", "qemu-img")
	reg := testregistry.Start(t, testregistry.Config{})
	l := testregistry.NewLayout(t)
	img := l.Image("amd64",
		map[string]string{"etc/os-release": "ID=alpine\n", "bin/sh": noise("bin/sh", 3<<20+100<<10)},
		map[string]string{"etc/motd": "welcome\n"})
	l.Tag("3.20", img)
	reg.Push(l, "3.20", "library/alpine")

	disk := filepath.Join(t.TempDir(), "jammy.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", disk, "8G")
	al := testregistry.NewLayout(t)
	al.Tag("jammy", al.Artifact(testregistry.File{Title: "jammy.qcow2", Path: disk}))
	reg.Push(al, "jammy", "vm/disks")
	return &ociFixture{reg: reg, disk: disk, image: img}
}

// noise is n pseudo-random bytes seeded by name: a layer of it does not
// compress, so that it spans several chunks of the cache.
func noise(name string, n int) string {
	var seed [32]byte
	copy(seed[:], name)
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return string(b)
}

func (f *ociFixture) upstream() string {
	return "oci+http://" + f.reg.Host
}

// The walk-through: a registry mounted with --repo shows each
// repository as an OCI image layout, and an artifact's titled layer is a
// file of its tag's directory that qemu-img reads in place, the same
// bytes as its blob, verified by its digest.
func TestOCIRegistryMount(t *testing.T) {
	need(t, "ls", "sha256sum", "getfattr", "stat")
	f := startOCIFixture(t)
	m := startMount(t, f.upstream(), "", "--repo", "library/alpine", "--repo", "vm/disks")

	// The source shows as the user named it.
	if line := m.proc.readyLine("ready: "); !strings.Contains(line, "ready: "+f.upstream()+" mounted at") {
		t.Errorf("ready line %q does not name the source %s", line, f.upstream())
	}
	if got := xattrs(t, m.dir)["source"]; got != f.upstream() {
		t.Errorf("the root's source is %q, want %q", got, f.upstream())
	}
	names := strings.Fields(run(t, "ls", m.path("vm/disks")))
	for _, want := range []string{"blobs", "index.json", "jammy", "oci-layout"} {
		if !slices.Contains(names, want) {
			t.Fatalf("ls vm/disks: %v, want %s in it", names, want)
		}
	}
	if got := sha256sum(t, m.path("vm/disks/jammy/jammy.qcow2")); got != sha256sum(t, f.disk) {
		t.Fatalf("jammy.qcow2 through the mount: sha256 %s, want %s", got, sha256sum(t, f.disk))
	}
	out := run(t, "qemu-img", "info", m.path("vm/disks/jammy/jammy.qcow2"))
	if !strings.Contains(out, "file format: qcow2") || !strings.Contains(out, "virtual size: 8 GiB") {
		t.Fatalf("qemu-img info through the mount:\n%s", out)
	}
	blob := m.path("vm/disks/blobs/sha256/" + sha256sum(t, f.disk))
	if x := xattrs(t, blob); x["digest"] != "sha256:"+sha256sum(t, f.disk) || x["state"] != "verified" ||
		x["media_type"] != "application/octet-stream" {
		t.Fatalf("xattrs of the disk's blob: %v", x)
	}
	// The titled file and the blob are one image: one inode, two links,
	// cached once.
	if a, b := run(t, "stat", "-c", "%i %h", blob), run(t, "stat", "-c", "%i %h", m.path("vm/disks/jammy/jammy.qcow2")); a != b || !strings.HasSuffix(strings.TrimSpace(a), " 2") {
		t.Fatalf("stat of the blob %q and of its titled name %q: want one inode with 2 links", a, b)
	}
}

// skopeo reads each repository directory of the mount as an OCI image
// layout and copies an image out of it: every blob it wrote has the
// sha256 it is named by, and the registry sent each byte of each blob
// (and of the manifest) once.
func TestOCILayoutForSkopeo(t *testing.T) {
	f := startOCIFixture(t)
	m := startMount(t, f.upstream(), "", "--repo", "library/alpine", "--repo", "vm/disks")
	dest := filepath.Join(t.TempDir(), "alpine")
	skopeo(t, "copy", "oci:"+m.path("library/alpine")+":3.20", "dir:"+dest)
	if got := sha256sum(t, filepath.Join(dest, "manifest.json")); got != strings.TrimPrefix(f.image.Digest, "sha256:") {
		t.Fatalf("skopeo copied a manifest of sha256 %s, want %s", got, f.image.Digest)
	}
	var man struct {
		Config testregistry.Descriptor
		Layers []testregistry.Descriptor
	}
	b, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
	if err != nil || json.Unmarshal(b, &man) != nil || len(man.Layers) != 2 {
		t.Fatalf("manifest.json: %v\n%s", err, b)
	}
	blobs := append([]testregistry.Descriptor{man.Config}, man.Layers...)
	for _, d := range blobs {
		hex := strings.TrimPrefix(d.Digest, "sha256:")
		if got := sha256sum(t, filepath.Join(dest, hex)); got != hex {
			t.Errorf("skopeo wrote blob %s with sha256 %s", hex, got)
		}
	}
	// The registry logs a request once it is over: wait for every
	// blob's bytes, then look for more.
	sent := f.reg.Sent("blobs")
	waitUntil(t, "the registry to log every blob sent", func() bool {
		sent = f.reg.Sent("blobs")
		return !slices.ContainsFunc(blobs, func(d testregistry.Descriptor) bool { return sent[d.Digest] < d.Size })
	})
	for _, d := range blobs {
		t.Logf("blob %s: %d bytes, the registry sent %d", d.Digest, d.Size, sent[d.Digest])
		if sent[d.Digest] != d.Size {
			t.Errorf("the registry sent %d bytes of blob %s, want its %d once", sent[d.Digest], d.Digest, d.Size)
		}
	}
	if got := f.reg.Sent("manifests")[f.image.Digest]; got != f.image.Size {
		t.Errorf("the registry sent %d bytes of the manifest, want its %d once", got, f.image.Size)
	}
}

// skopeo runs skopeo with a HOME of its own (no stray auth.json) and
// returns its output; a failure fails the test.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("skopeo", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// An artifact with a hostile layer title (../x) is listed without it:
// the root's catalog_warnings names it, its other titled file and the
// other tags are there, and its blob reads by digest.
func TestOCICatalogWarnings(t *testing.T) {
	need(t, "ls", "sha256sum", "getfattr")
	f := startOCIFixture(t)
	l := testregistry.NewLayout(t)
	evil, good := []byte("a layer titled ../x\n"), []byte("a layer titled good.img\n")
	l.Tag("evil", l.Artifact(testregistry.File{Title: "../x", Data: evil}, testregistry.File{Title: "good.img", Data: good}))
	f.reg.Push(l, "evil", "vm/disks")
	m := startMount(t, f.upstream(), "", "--repo", "vm/disks")

	warnings := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.imgcache.catalog_warnings", m.dir)
	if !strings.Contains(warnings, `vm/disks:evil: the title of layer sha256:`+sha256hex(evil)) || !strings.Contains(warnings, `"../x"`) {
		t.Errorf("catalog_warnings does not name the refused title ../x:\n%s", warnings)
	}
	if got := strings.Fields(run(t, "ls", m.path("vm/disks/evil"))); !slices.Equal(got, []string{"good.img"}) {
		t.Errorf("ls vm/disks/evil: %q, want only good.img", got)
	}
	if got := strings.Fields(run(t, "ls", m.path("vm/disks/jammy"))); !slices.Equal(got, []string{"jammy.qcow2"}) {
		t.Errorf("ls vm/disks/jammy: %q", got)
	}
	for _, b := range [][]byte{evil, good} {
		if got := sha256sum(t, m.path("vm/disks/blobs/sha256/"+sha256hex(b))); got != sha256hex(b) {
			t.Errorf("blob %s reads with sha256 %s", sha256hex(b), got)
		}
	}
	if _, err := os.Lstat(filepath.Join(m.dir, "vm/x")); !os.IsNotExist(err) {
		t.Errorf("vm/x: %v, want it absent", err)
	}
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// With the registry stopped, a remount over the same cache lists every
// repository and tag, skopeo inspects and copies the image it read
// before, and the disk image it read reads again; the root says the
// catalog is stale.
func TestOCIOffline(t *testing.T) {
	need(t, "ls", "sha256sum", "getfattr")
	f := startOCIFixture(t)
	cache := t.TempDir()
	repos := []string{"--repo", "library/alpine", "--repo", "vm/disks"}
	m := startMount(t, f.upstream(), cache, repos...)
	skopeo(t, "copy", "oci:"+m.path("library/alpine")+":3.20", "dir:"+filepath.Join(t.TempDir(), "alpine"))
	if got := sha256sum(t, m.path("vm/disks/jammy/jammy.qcow2")); got != sha256sum(t, f.disk) {
		t.Fatalf("jammy.qcow2: sha256 %s, want %s", got, sha256sum(t, f.disk))
	}
	m.unmount(t)
	f.reg.Stop()

	m = startMount(t, f.upstream(), cache, repos...)
	if x := xattrs(t, m.dir); x["catalog_stale"] == "" {
		t.Errorf("root xattrs offline: %v, want catalog_stale", x)
	}
	for dir, want := range map[string][]string{
		"":               {"library", "vm"},
		"library/alpine": {"blobs", "index.json", "oci-layout"},
		"vm/disks":       {"blobs", "index.json", "jammy", "oci-layout"},
		"vm/disks/jammy": {"jammy.qcow2"},
	} {
		if got := strings.Fields(run(t, "ls", m.path(dir))); !slices.Equal(got, want) {
			t.Errorf("ls %q offline: %q, want %q", dir, got, want)
		}
	}
	var inspect struct{ Digest, Architecture string }
	out := skopeo(t, "inspect", "oci:"+m.path("library/alpine")+":3.20")
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || inspect.Digest != f.image.Digest || inspect.Architecture != "amd64" {
		t.Errorf("skopeo inspect offline: %v\n%s", err, out)
	}
	dest := filepath.Join(t.TempDir(), "alpine")
	skopeo(t, "copy", "oci:"+m.path("library/alpine")+":3.20", "dir:"+dest)
	if got := sha256sum(t, filepath.Join(dest, "manifest.json")); got != strings.TrimPrefix(f.image.Digest, "sha256:") {
		t.Errorf("skopeo copy offline: a manifest of sha256 %s, want %s", got, f.image.Digest)
	}
	if got := sha256sum(t, m.path("vm/disks/jammy/jammy.qcow2")); got != sha256sum(t, f.disk) {
		t.Errorf("jammy.qcow2 offline: sha256 %s, want %s", got, sha256sum(t, f.disk))
	}
}
