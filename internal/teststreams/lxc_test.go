package teststreams

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
)

// The trees are what LXD's own client reads: the Debian lxc (package
// lxd-client) lists every version with the fingerprint the generator
// computed, and exports an image's files, checking each sha256, from
// nginx over TLS 1.3 with the test's CA. No LXD daemon is involved.
func TestLXCReadsTheTree(t *testing.T) {
	if _, err := exec.LookPath("lxc"); err != nil {
		t.Fatal("lxc is not installed; run .ci/setup (package lxd-client)")
	}
	const MiB = 1 << 20
	spec := Spec{Seed: 11, Products: []Product{
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "default", Aliases: []string{"debian/12", "debian/bookworm"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: Container, MetaSize: MiB / 4, RootSize: 2 * MiB},
		{OS: "debian", Release: "bookworm", Arch: "amd64", Variant: "cloud", Aliases: []string{"debian/12/cloud"},
			Versions: []string{"20240101_05:24", "20240102_05:24"}, Kind: VM, MetaSize: MiB / 4, RootSize: MiB},
		{OS: "alpine", Release: "3.19", Arch: "amd64", Variant: "default", Aliases: []string{"alpine/3.19"},
			Versions: []string{"20240101_13:00", "20240102_13:00"}, Kind: Unified, MetaSize: MiB},
	}}
	tree, err := Write(t.TempDir(), spec)
	if err != nil {
		t.Fatal(err)
	}
	cert := NewCert(t)
	ng := StartNginx(t, tree.Dir, NginxOptions{Cert: cert})
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
	lxc("remote", "add", "mirror", strings.TrimSuffix(ng.URL, "/"), "--protocol=simplestreams", "--public")

	var listed []struct {
		Fingerprint string
		Aliases     []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(lxc("image", "list", "mirror:", "--format", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, im := range listed {
		got = append(got, im.Fingerprint)
	}
	for _, im := range tree.Images {
		want = append(want, im.Fingerprint)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("lxc lists fingerprints\n %q\nwant\n %q", got, want)
	}

	for _, c := range []struct {
		alias string
		img   Image
		flags []string
	}{
		{"debian/12", tree.Images[1], nil},
		{"debian/12/cloud", tree.Images[3], []string{"--vm"}},
		{"alpine/3.19", tree.Images[5], nil},
	} {
		out := t.TempDir() // an existing directory: else lxc takes the name as a file prefix
		lxc(append([]string{"image", "export", "mirror:" + c.alias, out}, c.flags...)...)
		files := []*Item{c.img.Meta}
		if c.img.Root != nil {
			files = append(files, c.img.Root)
		}
		for _, it := range files {
			b, err := os.ReadFile(filepath.Join(out, filepath.Base(it.Path)))
			if err != nil {
				t.Fatalf("export of %s: %v", c.alias, err)
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != it.SHA256 {
				t.Errorf("export of %s: %s differs from the tree's", c.alias, it.Path)
			}
		}
	}
}
