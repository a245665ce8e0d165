package integration

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// A 1 GiB disk image (a qcow2 of 1 GiB of data) pushed as an artifact:
// qemu-img info through its titled name makes the registry send at most
// 4 MiB of it; sha256sum reads the registry's bytes, each sent once; the
// image is then verified by its digest.
func TestOCIBigDisk(t *testing.T) {
	need(t, "qemu-img", "sha256sum", "getfattr")
	testregistry.Need(t, "docker-registry", "skopeo")
	const maxInfoBytes = 4 << 20
	reg := testregistry.Start(t, testregistry.Config{})
	disk := bigQcow2(t, 1<<30)
	l := testregistry.NewLayout(t)
	art := l.Artifact(testregistry.File{Title: "big.qcow2", Path: disk})
	l.Tag("v1", art)
	reg.Push(l, "v1", "vm/big")
	layer := l.Layers(art)[0] // its digest is sha256sum's, by the layout's hash
	if layer.Size < 1<<30 {
		t.Fatalf("the qcow2 has %d bytes, want 1 GiB and more", layer.Size)
	}
	for _, dir := range []string{filepath.Dir(disk), l.Dir} { // 1 GiB less on disk
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	blob, want := layer.Digest, strings.TrimPrefix(layer.Digest, "sha256:")

	m := startMount(t, "oci+http://"+reg.Host, "", "--repo", "vm/big")
	file := m.path("vm/big/v1/big.qcow2")
	out := run(t, "qemu-img", "info", file)
	if !strings.Contains(out, "file format: qcow2") || !strings.Contains(out, "virtual size: 1 GiB") {
		t.Fatalf("qemu-img info through the mount:\n%s", out)
	}
	// Every byte cached was sent, and the registry logs a request once
	// it is over: wait until its log accounts for them.
	var sent, cached int64
	waitUntil(t, "the registry to log what the cache holds", func() bool {
		cached, _ = strconv.ParseInt(xattrs(t, file)["cached_bytes"], 10, 64)
		sent = reg.Sent("blobs")[blob]
		return sent >= cached && cached > 0
	})
	t.Logf("qemu-img info: the registry sent %d bytes of the %d-byte blob; %d cached", sent, layer.Size, cached)
	if sent > maxInfoBytes {
		t.Errorf("qemu-img info made the registry send %d bytes, want at most %d", sent, maxInfoBytes)
	}

	if got := sha256sum(t, file); got != want {
		t.Fatalf("big.qcow2 through the mount: sha256 %s, want %s", got, want)
	}
	waitUntil(t, "the image to be verified", func() bool { return xattrs(t, file)["state"] == "verified" })
	waitUntil(t, "the registry to log every byte sent", func() bool { return reg.Sent("blobs")[blob] >= layer.Size })
	if sent := reg.Sent("blobs")[blob]; sent != layer.Size {
		t.Errorf("the registry sent %d bytes of the %d-byte blob, want each once", sent, layer.Size)
	}
}

// bigQcow2 makes a qcow2 image of size bytes of pseudo-random data (so
// the file is that big too), from a raw file it then removes.
func bigQcow2(t *testing.T, size int64) string {
	t.Helper()
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{'b', 'i', 'g'}), size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "big.qcow2")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, disk)
	if err := os.Remove(raw); err != nil {
		t.Fatal(err)
	}
	return disk
}
