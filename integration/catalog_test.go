package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imgcache/imgcache/internal/teststreams"
)

// TestSimplestreamsRefreshWhileOpen: the upstream adds a version and drops
// one while a reader holds an item of the old one open (issue 10). The new
// JSON files and the new items show together; the old item reads through
// the held descriptor and, as it was cached whole, stays listed, marked
// retired; an item of the old version that was not cached whole leaves.
func TestSimplestreamsRefreshWhileOpen(t *testing.T) {
	need(t, "nginx", "stat", "sha256sum", "getfattr")
	const MiB = 1 << 20
	product := teststreams.Product{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "default",
		Aliases: []string{"debian/12"}, Versions: []string{"20240101_05:24", "20240102_05:24"},
		Kind: teststreams.Container, MetaSize: MiB / 4, RootSize: 2 * MiB}
	spec := teststreams.Spec{Seed: 31, Products: []teststreams.Product{product}}
	dir := t.TempDir()
	tree, err := teststreams.Write(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	up := teststreams.StartNginx(t, dir, teststreams.NginxOptions{})
	m := startMount(t, "simplestreams+"+up.URL, "")

	old := tree.Images[0] // version 20240101_05:24
	if got := sha256sum(t, m.path(old.Root.Path)); got != old.Root.SHA256 {
		t.Fatal("the old root file differs from the upstream's")
	}
	waitUntil(t, "the old root file to be verified", func() bool { return xattrs(t, m.path(old.Root.Path))["state"] == "verified" })

	reader := exec.Command("sh", "-c", `exec 3<"$1" && echo opened && read go && sha256sum <&3`, "sh", m.path(old.Root.Path))
	stdin, _ := reader.StdinPipe()
	stdout, _ := reader.StdoutPipe()
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "opened\n" {
		t.Fatalf("reader: %q %v", line, err)
	}

	product.Versions = []string{"20240102_05:24", "20240103_05:24"}
	spec.Products = []teststreams.Product{product}
	if tree, err = teststreams.Write(dir, spec); err != nil {
		t.Fatal(err)
	}
	if err := m.proc.cmd.Process.Signal(syscall.SIGHUP); err != nil { // a reload refreshes the catalog
		t.Fatal(err)
	}
	products := filepath.Join(dir, teststreams.ProductsPath)
	want := sha256sum(t, products)
	waitUntil(t, "the new product file through the mount", func() bool {
		got, err := runErr("sha256sum", m.path(teststreams.ProductsPath))
		return err == nil && strings.HasPrefix(got, want)
	})
	// The moment the new product file shows, every item it names is
	// listed, with its size.
	for _, it := range tree.Items {
		if got := strings.TrimSpace(run(t, "stat", "-c", "%s", m.path(it.Path))); got != fmt.Sprint(it.Size) {
			t.Fatalf("%s: listed with %s bytes, the product file says %d", it.Path, got, it.Size)
		}
	}
	if got, want := sha256sum(t, m.path(teststreams.IndexPath)), sha256sum(t, filepath.Join(dir, teststreams.IndexPath)); got != want {
		t.Fatal("the index through the mount differs from the upstream's")
	}

	fmt.Fprintln(stdin)
	held, _ := io.ReadAll(out)
	if err := reader.Wait(); err != nil || !strings.HasPrefix(string(held), old.Root.SHA256) {
		t.Fatalf("the held old root file read %q, %v; want sha256 %s", held, err, old.Root.SHA256)
	}
	x := xattrs(t, m.path(old.Root.Path))
	if x["retired"] == "" || x["state"] != "verified" {
		t.Fatalf("the old root file, cached whole, after its version left: %v; want it listed, retired", x)
	}
	if got := sha256sum(t, m.path(old.Root.Path)); got != old.Root.SHA256 {
		t.Fatal("the retired root file reads other bytes")
	}
	if _, err := runErr("stat", m.path(old.Meta.Path)); err == nil {
		t.Fatal("the old metadata file, never read, is still listed after its version left")
	}
	if x := xattrs(t, m.path(tree.Items[0].Path)); x["ftype"] == "" || x["version"] == "" {
		t.Fatalf("an item's attributes: %v, want ftype and version", x)
	}

	// imgcache stat --json: by name (the daemon) and by path (the xattrs).
	for _, arg := range []string{old.Root.Path, m.path(old.Root.Path)} {
		var img struct {
			Attrs   map[string]string `json:"attrs"`
			Retired string            `json:"retired"`
		}
		if err := json.Unmarshal([]byte(run(t, bin, "stat", "--json", "--cache-dir", m.cacheDir, arg)), &img); err != nil {
			t.Fatal(err)
		}
		if img.Attrs["ftype"] != old.Root.FType || img.Attrs["version"] != old.Version || img.Retired == "" {
			t.Fatalf("imgcache stat --json %s: %+v; want its ftype, version and when it retired", arg, img)
		}
	}
}
