package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeSums writes a SHA256SUMS file for imgs in dir, as sha256sum(1)
// would (the mirror convention httpdir reads digests from).
func writeSums(t *testing.T, dir string, imgs map[string]image) {
	t.Helper()
	var b []byte
	for _, img := range imgs {
		b = fmt.Appendf(b, "%s *%s\n", img.sha256, img.name)
	}
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// An empty image whose digest a SHA256SUMS file publishes (the sha256 of
// nothing) is verified, with nothing to fetch; an image read whole is
// verified too, and the empty one reads as empty.
func TestEmptyImageWithDigestIsVerified(t *testing.T) {
	need(t, "getfattr", "sha256sum", "cat")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"empty.img": 0, "data.img": 3<<20 + 17})
	writeSums(t, root, imgs)
	up := startNginx(t, root, false)
	m := startMount(t, up.url, "")
	empty := m.path("empty.img")
	x := xattrs(t, empty)
	if x["digest"] != "sha256:"+imgs["empty.img"].sha256 {
		t.Fatalf("digest of empty.img = %q; the SHA256SUMS file was not read", x["digest"])
	}
	if x["state"] != "verified" {
		t.Errorf("state of an empty image with its digest = %q, want verified", x["state"])
	}
	if out := run(t, "cat", empty); out != "" {
		t.Errorf("cat of an empty image printed %d bytes", len(out))
	}
	if got := sha256sum(t, m.path("data.img")); got != imgs["data.img"].sha256 {
		t.Fatalf("sha256sum = %s", got)
	}
	waitUntil(t, "data.img verified", func() bool { return xattrs(t, m.path("data.img"))["state"] == "verified" })
	if s := xattrs(t, empty)["state"]; s != "verified" {
		t.Errorf("state of the empty image after reads = %q", s)
	}
}
