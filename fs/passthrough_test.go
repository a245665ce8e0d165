package fs

import (
	"bytes"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream/upstreamtest"
)

// TestSettledImagesArePassthrough reads a settled image with O_DIRECT,
// which without passthrough always reaches the daemon. With passthrough
// (what the probe found this kernel offers) the daemon serves no byte of
// it; without, every byte. Either way the bytes are right, and an open
// made while another open of the image is in the caching mode still works
// (the kernel refuses mixing the two modes with EIO).
func TestSettledImagesArePassthrough(t *testing.T) {
	data := bytes.Repeat([]byte("passthrough!"), 100_000) // 1.2 MB: 19 chunks of 64 KiB
	up := memUpstream(map[string][]byte{"p.img": data})
	mnt, c, root, server := mountTestServer(t, up)
	probeErr := root.ProbePassthrough(server, t.TempDir())
	t.Logf("serve mode %s (probe: %v)", root.ServeMode(), probeErr)
	if got := sh(t, "getfattr --absolute-names -n user.imgcache.serve_mode --only-values "+mnt); got != string(root.ServeMode()) {
		t.Fatalf("root serve_mode = %q, the root says %q", got, root.ServeMode())
	}
	want := hexSum(data)

	// One reader holds the image open from before it is settled while a
	// second one fetches it all; a third opens it once settled, while the
	// first still holds its open.
	p := mnt + "/p.img"
	e, _ := c.Lookup("p.img")
	script := "exec 3<" + p + "; cat " + p + " >/dev/null; " +
		"while [ \"$(getfattr --absolute-names -n user.imgcache.state --only-values " + p + ")\" != verified ]; do sleep 0.05; done; " +
		"sha256sum " + p + "; exec 3<&-"
	if got := sh(t, script); !strings.HasPrefix(got, want) {
		t.Fatalf("read while another open is in caching mode: %q", got)
	}
	if !e.Image.Complete() {
		t.Fatal("image not settled after a full read and verification")
	}

	before := c.Stats().BytesServed.Load()
	if got := sh(t, "dd if="+p+" bs=64k iflag=direct status=none | sha256sum"); !strings.HasPrefix(got, want) {
		t.Fatalf("O_DIRECT read of a settled image: %q", got)
	}
	served := c.Stats().BytesServed.Load() - before
	switch root.ServeMode() {
	case ServePassthrough:
		if served != 0 {
			t.Errorf("passthrough: the daemon served %d bytes of an O_DIRECT read", served)
		}
	default:
		if served != uint64(len(data)) {
			t.Errorf("page-cache mode: the daemon served %d bytes of an O_DIRECT read of %d", served, len(data))
		}
	}
}

// TestForcedPassthroughCounts: while an open of an image is passthrough,
// go-fuse makes every new open of it passthrough too (it hands the
// kernel the registered backing file without asking), so such an open
// counts as passthrough, not as one in the caching mode, even when this
// package would not have chosen passthrough for it (the image is not
// settled). Counted as caching, it kept later opens of the settled image
// out of passthrough for as long as it stayed open.
func TestForcedPassthroughCounts(t *testing.T) {
	var m ioModes
	if !m.open(true) {
		t.Fatal("first open of a settled image in a passthrough mount is not passthrough")
	}
	if !m.open(false) {
		t.Error("an open while a passthrough open is alive is not counted as passthrough")
	}
	if m.cachedOpens != 0 || m.passOpens != 2 {
		t.Errorf("counts: %d caching, %d passthrough; want 0 and 2", m.cachedOpens, m.passOpens)
	}
	var c ioModes
	if c.open(false) || c.open(true) {
		t.Error("an open while an open in caching mode is alive is passthrough")
	}
	if c.cachedOpens != 2 || c.passOpens != 0 {
		t.Errorf("counts: %d caching, %d passthrough; want 2 and 0", c.cachedOpens, c.passOpens)
	}
}

// TestProbeFailureFallsBack: a kernel that refuses backing files leaves
// the mount in page-cache mode, and says why.
func TestProbeFailureFallsBack(t *testing.T) {
	err := probeBacking(refusingRegistrar{}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("probe with a refusing kernel: %v", err)
	}
}

type refusingRegistrar struct{}

func (refusingRegistrar) RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno) {
	return 0, syscall.EPERM
}
func (refusingRegistrar) UnregisterBackingFd(int32) syscall.Errno { return 0 }

// mountTestServer is mountTest that also returns the root and the
// server, for probes.
func mountTestServer(t *testing.T, up *upstreamtest.Upstream) (string, *cachecore.Cache, *Root, *fuse.Server) {
	t.Helper()
	c, err := cachecore.Open(cachecore.Config{Dir: t.TempDir(), Upstream: up, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	opts := Options()
	opts.MountOptions.DirectMount = true
	root := NewRoot(c)
	server, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Unmount()
		c.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for c.ImageCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("catalog empty")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return mnt, c, root, server
}
