package integration

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// A registry in proxy mode (a pull-through cache of another) as the
// upstream: skopeo copies an image and sha256sum reads a disk image with
// the origin's bytes while the proxy's blobs are cold (it answers Range
// with 200 and the whole blob) and again, through a second cache, once
// they are warm (206); the bytes each registry sent are logged.
func TestOCIPullThrough(t *testing.T) {
	need(t, "sha256sum")
	f := startOCIFixture(t)
	proxy := testregistry.Start(t, testregistry.Config{ProxyOf: f.reg.URL})
	upstream := "oci+http://" + proxy.Host
	repos := []string{"--repo", "library/alpine", "--repo", "vm/disks"}

	read := func(m *mount) []testregistry.Descriptor {
		t.Helper()
		dest := filepath.Join(t.TempDir(), "alpine")
		skopeo(t, "copy", "oci:"+m.path("library/alpine")+":3.20", "dir:"+dest)
		var man struct {
			Config testregistry.Descriptor
			Layers []testregistry.Descriptor
		}
		b, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
		if err != nil || json.Unmarshal(b, &man) != nil {
			t.Fatalf("manifest.json: %v\n%s", err, b)
		}
		blobs := append([]testregistry.Descriptor{man.Config}, man.Layers...)
		for _, d := range blobs {
			hex := strings.TrimPrefix(d.Digest, "sha256:")
			if got := sha256sum(t, filepath.Join(dest, hex)); got != hex {
				t.Errorf("skopeo wrote blob %s with sha256 %s", hex, got)
			}
		}
		disk := sha256sum(t, f.disk)
		if got := sha256sum(t, m.path("vm/disks/jammy/jammy.qcow2")); got != disk {
			t.Errorf("jammy.qcow2 through the pull-through registry: sha256 %s, want %s", got, disk)
		}
		st, err := os.Stat(f.disk)
		if err != nil {
			t.Fatal(err)
		}
		return append(blobs, testregistry.Descriptor{Digest: "sha256:" + disk, Size: st.Size()})
	}
	sent := func(blobs []testregistry.Descriptor, before map[string]int64) (proxySent, originSent map[string]int64) {
		t.Helper()
		waitUntil(t, "the pull-through registry to log every blob", func() bool {
			proxySent = proxy.Sent("blobs")
			for _, d := range blobs {
				if proxySent[d.Digest]-before[d.Digest] < d.Size {
					return false
				}
			}
			return true
		})
		return proxySent, f.reg.Sent("blobs")
	}

	cold := startMount(t, upstream, "", repos...)
	blobs := read(cold)
	coldProxy, coldOrigin := sent(blobs, nil)
	// Cold, the pull-through registry answers each blob whole (200),
	// and the cache keeps all of the first reply: it sends each byte
	// once. (The origin's bytes are the pull-through registry's
	// business: distribution 2.8 pulls a cold blob twice, once for the
	// client and once to store it.)
	whole := map[string]int{}
	for _, q := range proxy.Requests() {
		if q.Method == "GET" && strings.Contains(q.URI, "/blobs/") && q.Status == 200 {
			whole[q.URI[strings.LastIndex(q.URI, "/")+1:]]++
		}
	}
	for _, d := range blobs {
		t.Logf("cold blob %s of %d bytes: the pull-through registry sent %d (%d whole replies), the origin %d", d.Digest, d.Size, coldProxy[d.Digest], whole[d.Digest], coldOrigin[d.Digest])
		if coldProxy[d.Digest] != d.Size || whole[d.Digest] == 0 {
			t.Errorf("cold blob %s of %d bytes: the pull-through registry sent %d in %d whole replies; want one reply of the whole blob", d.Digest, d.Size, coldProxy[d.Digest], whole[d.Digest])
		}
	}

	// Warm: once the pull-through registry holds each blob, a second
	// cache reads them with 206 replies, and the origin sends no more.
	for _, d := range blobs {
		stored := filepath.Join(proxy.Dir, "docker/registry/v2/blobs/sha256", d.Digest[7:9], d.Digest[7:], "data")
		waitUntil(t, "the pull-through registry to keep "+d.Digest, func() bool {
			_, err := os.Stat(stored)
			return err == nil
		})
	}
	originBefore := maps.Clone(f.reg.Sent("blobs"))
	warm := startMount(t, upstream, "", repos...)
	read(warm)
	warmProxy, warmOrigin := sent(blobs, coldProxy)
	for _, d := range blobs {
		p, o := warmProxy[d.Digest]-coldProxy[d.Digest], warmOrigin[d.Digest]-originBefore[d.Digest]
		t.Logf("warm blob %s of %d bytes: the pull-through registry sent %d, the origin %d", d.Digest, d.Size, p, o)
		if p != d.Size || o != 0 {
			t.Errorf("warm blob %s of %d bytes: the pull-through registry sent %d, the origin %d; want it all once from the pull-through registry", d.Digest, d.Size, p, o)
		}
	}
}
