package oci

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/internal/testregistry"
)

// The tests here run Debian's docker-registry (distribution 2.8) and
// skopeo for real: content is pushed with skopeo, listed and fetched by
// this package, written out as a directory, and read back by skopeo as
// an OCI image layout.

// fixture is what pushFixture put in a registry.
type fixture struct {
	disk, notes []byte // the artifact's titled files
	untitled    []byte
}

// pushFixture pushes, into repo vm/disks: tag jammy, an ORAS-style
// artifact (disk.qcow2 and notes.txt titled, one layer untitled); tag
// app, a container image; tag multi, an index of two platforms; and into
// library/hello, as Docker schema 2: tag docker, an image, and tag multi,
// a manifest list.
func pushFixture(t *testing.T, r *testregistry.Registry, creds ...string) fixture {
	t.Helper()
	f := fixture{
		disk:     bytes.Repeat([]byte("qcow2 disk image bytes "), 100_000), // 2.3 MB
		notes:    []byte("release notes\n"),
		untitled: []byte("no title"),
	}
	l := testregistry.NewLayout(t)
	l.Tag("jammy", l.Artifact(
		testregistry.File{Title: "disk.qcow2", MediaType: "application/vnd.imgcache.qcow2", Data: f.disk},
		testregistry.File{Title: "notes.txt", Data: f.notes},
		testregistry.File{Data: f.untitled},
	))
	l.Tag("app", l.Image("amd64", map[string]string{"hello": "hi"}, map[string]string{"etc/motd": "welcome"}))
	l.Tag("multi", l.Index(
		withPlatform(l.Image("amd64", map[string]string{"bin/a": "amd64"}), "amd64"),
		withPlatform(l.Image("arm64", map[string]string{"bin/a": "arm64"}), "arm64"),
	))
	l.Tag("docker", l.Image("amd64", map[string]string{"hello": "docker"}))
	var extra []string
	if len(creds) > 0 {
		extra = []string{"--dest-creds", creds[0]}
	}
	for _, tag := range []string{"jammy", "app", "multi"} {
		r.Push(l, tag, "vm/disks", extra...)
	}
	r.Push(l, "docker", "library/hello", append(extra, "--format", "v2s2")...)
	r.Push(l, "multi", "library/hello", append(extra, "--format", "v2s2")...) // a Docker manifest list
	return f
}

func withPlatform(d testregistry.Descriptor, arch string) testregistry.Descriptor {
	d.Platform = &testregistry.Platform{Architecture: arch, OS: "linux"}
	return d
}

func newRegistryUpstream(t *testing.T, r *testregistry.Registry, opts Options) (*Upstream, *bytes.Buffer) {
	t.Helper()
	var logs syncBuffer
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	}
	u, err := New("oci+http://"+r.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	return u, &logs.Buffer
}

// syncBuffer is a bytes.Buffer for a logger used by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func names(es []upstream.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	return out
}

func entry(t *testing.T, es []upstream.Entry, name string) upstream.Entry {
	t.Helper()
	for _, e := range es {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no entry %q in %q", name, names(es))
	return upstream.Entry{}
}

// fetchAll reads a whole entry as the cache would: its Content, or
// Fetch in pieces of 1 MiB.
func fetchAll(t *testing.T, u *Upstream, e upstream.Entry) []byte {
	t.Helper()
	if e.Content != nil {
		return e.Content
	}
	var out []byte
	for off := int64(0); off < e.Size; off += 1 << 20 {
		n := min(1<<20, e.Size-off)
		r, err := u.Fetch(context.Background(), e, off, n)
		if err != nil {
			t.Fatalf("Fetch(%q, %d, %d): %v", e.Name, off, n, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || int64(len(b)) != n {
			t.Fatalf("Fetch(%q, %d, %d) read %d bytes: %v", e.Name, off, n, len(b), err)
		}
		out = append(out, b...)
	}
	return out
}

// writeTree writes the catalog out as files under dir, each checked
// against its digest, as the mount will show it.
func writeTree(t *testing.T, u *Upstream, es []upstream.Entry, dir string) {
	t.Helper()
	for _, e := range es {
		if err := e.Validate(); err != nil {
			t.Fatalf("entry does not validate: %v", err)
		}
		b := fetchAll(t, u, e)
		if sum := sha256.Sum256(b); e.Digest != "" && e.Digest != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Fatalf("%s: bytes do not match digest %s", e.Name, e.Digest)
		}
		p := filepath.Join(dir, e.Name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	testregistry.Need(t, "skopeo")
	cmd := exec.Command("skopeo", args...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRegistryLayout: the catalog of a real registry is an OCI image
// layout per repository that skopeo reads (every tag, Docker schema 2 and
// a two-platform index too) with the registry's bytes, plus the titled
// files of the artifact under <repo>/<tag>/<title>.
func TestRegistryLayout(t *testing.T) {
	r := testregistry.Start(t, testregistry.Config{})
	f := pushFixture(t, r)
	u, logs := newRegistryUpstream(t, r, Options{})
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	all := names(es)
	for _, want := range []string{
		"vm/disks/oci-layout", "vm/disks/index.json", "vm/disks/jammy/disk.qcow2", "vm/disks/jammy/notes.txt",
		"library/hello/oci-layout", "library/hello/index.json",
	} {
		if !slices.Contains(all, want) {
			t.Errorf("no %q in the catalog %q", want, all)
		}
	}
	for _, n := range all {
		if strings.HasPrefix(n, "vm/disks/app/") || strings.HasPrefix(n, "vm/disks/multi/") || strings.HasPrefix(n, "library/hello/docker/") {
			t.Errorf("%q: only titled layers of an artifact get a tag directory", n)
		}
	}
	if !slices.IsSorted(all) {
		t.Errorf("catalog not sorted: %q", all)
	}

	disk := entry(t, es, "vm/disks/jammy/disk.qcow2")
	sum := sha256.Sum256(f.disk)
	if !disk.ByDigest || disk.Digest != "sha256:"+hex.EncodeToString(sum[:]) || disk.Size != int64(len(f.disk)) ||
		disk.Attrs["media_type"] != "application/vnd.imgcache.qcow2" {
		t.Errorf("disk.qcow2 entry %+v", disk)
	}
	blob := entry(t, es, "vm/disks/blobs/sha256/"+hex.EncodeToString(sum[:]))
	if blob.Digest != disk.Digest || !blob.ByDigest || blob.Content != nil {
		t.Errorf("the disk's blob entry %+v, want the same digest as its title", blob)
	}
	if got := fetchAll(t, u, disk); !bytes.Equal(got, f.disk) {
		t.Errorf("disk.qcow2 fetched %d bytes that differ from the pushed ones", len(got))
	}

	var idx struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(entry(t, es, "vm/disks/index.json").Content, &idx); err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, m := range idx.Manifests {
		tags = append(tags, m.Annotations["org.opencontainers.image.ref.name"])
	}
	if !slices.Equal(tags, []string{"app", "jammy", "multi"}) {
		t.Errorf("index.json tags %q, want app, jammy, multi in order", tags)
	}
	// The Docker schema 2 image shows as its OCI conversion (tools skip
	// Docker media types in a layout); the registry's manifest is a blob.
	if err := json.Unmarshal(entry(t, es, "library/hello/index.json").Content, &idx); err != nil || idx.Manifests[0].MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("library/hello's index.json lists %+v (%v), want the OCI conversion of the Docker manifest", idx.Manifests, err)
	}
	docker := 0
	for _, e := range es {
		if strings.HasPrefix(e.Name, "library/hello/blobs/") && e.Attrs["media_type"] == mediaTypeDockerManifest && e.Content != nil {
			docker++
		}
	}
	if docker != 3 {
		t.Errorf("library/hello holds %d Docker manifests, want the registry's three (an image, the two of the list)", docker)
	}

	dir := t.TempDir()
	writeTree(t, u, es, dir)
	for _, ref := range []string{"vm/disks:jammy", "vm/disks:app", "library/hello:docker"} {
		repo, tag, _ := strings.Cut(ref, ":")
		out := filepath.Join(t.TempDir(), "out")
		skopeo(t, "copy", "oci:"+filepath.Join(dir, repo)+":"+tag, "dir:"+out)
		checkDirCopy(t, out, dir, repo)
	}
	// Every platform of the index (and of the Docker manifest list) is
	// in the layout.
	for _, repo := range []string{"vm/disks", "library/hello"} {
		out := filepath.Join(t.TempDir(), "multi")
		skopeo(t, "copy", "--all", "oci:"+filepath.Join(dir, repo)+":multi", "dir:"+out)
		checkDirCopy(t, out, dir, repo)
		if got := skopeo(t, "inspect", "--raw", "oci:"+filepath.Join(dir, repo)+":multi"); !strings.Contains(got, "arm64") || !strings.Contains(got, ocispec.MediaTypeImageIndex) {
			t.Errorf("skopeo inspect of %s:multi: %s", repo, got)
		}
	}
	if logs.Len() > 0 {
		t.Logf("log:\n%s", logs)
	}
}

// checkDirCopy: every file skopeo wrote to out (dir: transport: blobs
// named by hex digest) is the blob of that digest in the layout.
func checkDirCopy(t *testing.T, out, tree, repo string) {
	t.Helper()
	files, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fi := range files {
		name := fi.Name()
		if len(name) != 64 {
			continue // manifest.json, version
		}
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != name {
			t.Errorf("skopeo copied %s with the bytes of %x", name, sum)
		}
		want, err := os.ReadFile(filepath.Join(tree, repo, "blobs", "sha256", name))
		if err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s: not the layout's blob (%v)", name, err)
		}
		n++
	}
	if n == 0 {
		t.Errorf("skopeo copied no blob into %s", out)
	}
}

// TestRegistryRefreshCostsNoPull: a second List of an unchanged registry
// sends HEADs only (no manifest GET, which registries count as pulls) and
// gives the same catalog, byte for byte; a moved tag costs one GET.
func TestRegistryRefreshCostsNoPull(t *testing.T) {
	r := testregistry.Start(t, testregistry.Config{})
	pushFixture(t, r)
	u, _ := newRegistryUpstream(t, r, Options{})
	ctx := context.Background()
	first, err := u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gets := r.Count("GET", "/manifests/")
	heads := r.Count("HEAD", "/manifests/")
	second, err := u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Count("GET", "/manifests/"); g != gets {
		t.Errorf("the refresh sent %d manifest GETs, want none", g-gets)
	}
	if h := r.Count("HEAD", "/manifests/") - heads; h != 5 {
		t.Errorf("the refresh sent %d HEADs, want one per tag (5)", h)
	}
	if !sameCatalog(first, second) {
		t.Errorf("the refresh of an unchanged registry changed the catalog")
	}

	// Move tag jammy to a new artifact: one GET, a new index.json.
	l := testregistry.NewLayout(t)
	l.Tag("jammy", l.Artifact(testregistry.File{Title: "disk.qcow2", Data: []byte("version 2")}))
	r.Push(l, "jammy", "vm/disks")
	gets = r.Count("GET", "/manifests/")
	third, err := u.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Count("GET", "/manifests/") - gets; g != 1 {
		t.Errorf("a moved tag cost %d manifest GETs, want 1", g)
	}
	if bytes.Equal(entry(t, second, "vm/disks/index.json").Content, entry(t, third, "vm/disks/index.json").Content) {
		t.Errorf("index.json did not change when a tag moved")
	}
	if got := fetchAll(t, u, entry(t, third, "vm/disks/jammy/disk.qcow2")); string(got) != "version 2" {
		t.Errorf("the moved tag's disk.qcow2 reads %q", got)
	}
}

func sameCatalog(a, b []upstream.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y upstream.Entry) bool {
		return x.Name == y.Name && x.Size == y.Size && x.Digest == y.Digest && x.ByDigest == y.ByDigest &&
			bytes.Equal(x.Content, y.Content) && (x.Content == nil) == (y.Content == nil)
	})
}

// TestRegistryRangesCostTheirBytes: reads of a big blob cost the
// registry the bytes asked for, no more (what qemu-img info through the
// mount will need: a few ranges of a disk image, not the image).
func TestRegistryRangesCostTheirBytes(t *testing.T) {
	r := testregistry.Start(t, testregistry.Config{})
	disk := filepath.Join(t.TempDir(), "disk.raw")
	fd, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for off := int64(0); off < size; off += int64(len(pattern)) {
		fd.Write(pattern)
	}
	fd.Close()
	l := testregistry.NewLayout(t)
	l.Tag("v1", l.Artifact(testregistry.File{Title: "disk.raw", Path: disk}))
	r.Push(l, "v1", "vm/big")
	u, _ := newRegistryUpstream(t, r, Options{Repos: []string{"vm/big"}})
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := entry(t, es, "vm/big/v1/disk.raw")
	before := r.BlobBytes()
	var asked int64
	for _, off := range []int64{0, 1 << 20, size - 65536} {
		rd, err := u.Fetch(context.Background(), e, off, 65536)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rd)
		rd.Close()
		if err != nil || !bytes.Equal(b, pattern[off%int64(len(pattern)):][:65536]) {
			t.Fatalf("range at %d: %d bytes, %v", off, len(b), err)
		}
		asked += 65536
	}
	// The registry logs a request once it is over: wait for the three.
	for deadline := time.Now().Add(10 * time.Second); r.BlobBytes()-before < asked && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.BlobBytes() - before; got != asked {
		t.Errorf("the registry sent %d blob bytes for %d asked", got, asked)
	}
}
