package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// testImages is the set of images most tests serve: nested, odd sizes,
// one of 256 MiB.
var testImages = map[string]int64{
	"small.img":                3<<20 + 517,
	"os/debian/bookworm.qcow2": 17<<20 + 4095,
	"os/ubuntu/jammy.img":      256 << 20,
	"os/ubuntu/empty.img":      0,
	"containers/blob-sha.tar":  5 << 20,
}

// upstreamKinds starts each kind of real upstream over the same files.
var upstreamKinds = []struct {
	name  string
	start func(t *testing.T, root string) *upstreamServer
}{
	{"origin", startOrigin},
	{"nginx-html", func(t *testing.T, root string) *upstreamServer { return startNginx(t, root, false) }},
	{"nginx-json", func(t *testing.T, root string) *upstreamServer { return startNginx(t, root, true) }},
}

func TestListAndReadThroughMount(t *testing.T) {
	need(t, "ls", "sha256sum", "getfattr", "cat", "du")
	root := t.TempDir()
	imgs := makeImages(t, root, testImages)
	for _, kind := range upstreamKinds {
		t.Run(kind.name, func(t *testing.T) {
			up := kind.start(t, root)
			m := startMount(t, up.url, "")

			// ls lists every image, nested, sorted, with real sizes.
			out := run(t, "ls", "-lR", "--time-style=+", m.dir)
			var listed []string
			for name, img := range imgs {
				dirOut := run(t, "ls", "-l", "--time-style=+", filepath.Dir(m.path(name)))
				if !strings.Contains(dirOut, fmt.Sprintf(" %d  %s\n", img.size, filepath.Base(name))) {
					t.Errorf("ls -l of %s does not show %s with size %d:\n%s", filepath.Dir(name), name, img.size, dirOut)
				}
				listed = append(listed, name)
			}
			names := strings.Fields(run(t, "ls", m.path("os/ubuntu")))
			if !slices.IsSorted(names) || len(names) != 2 {
				t.Errorf("ls os/ubuntu = %q, want 2 sorted names", names)
			}
			if t.Failed() {
				t.Fatalf("ls -lR:\n%s", out)
			}

			// Bytes through the mount are the upstream's, cold and warm.
			for _, name := range listed {
				if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
					t.Fatalf("sha256 of %s through the mount = %s, want %s", name, got, imgs[name].sha256)
				}
			}
			big := m.path("os/ubuntu/jammy.img")
			if got := sha256sum(t, big); got != imgs["os/ubuntu/jammy.img"].sha256 {
				t.Fatal("warm read differs")
			}
			served := up.bytesServed(t)
			if n := served["os/ubuntu/jammy.img"]; n != 256<<20 {
				t.Errorf("upstream served %d bytes of jammy.img for two reads, want exactly one copy (%d)", n, 256<<20)
			}

			// Three cats, three hits; every attribute is there.
			small := m.path("small.img")
			before := xattrs(t, small)["hits"]
			for range 3 {
				run(t, "cat", small)
			}
			x := xattrs(t, small)
			if h, _ := strconv.Atoi(x["hits"]); before != "1" || h != 4 {
				t.Errorf("hits: %s after sha256sum, %s after three cats; want 1 and 4", before, x["hits"])
			}
			for _, name := range []string{"hits", "state", "cached_bytes", "size", "last_access", "source"} {
				if x[name] == "" {
					t.Errorf("user.imgcache.%s is missing: %v", name, x)
				}
			}
			// getfattr -d, as a user runs it, shows them too.
			shown := run(t, "getfattr", "-d", "--absolute-names", small)
			for _, name := range []string{"hits", "cached_bytes", "size", "source"} {
				if line := fmt.Sprintf("user.imgcache.%s=%q\n", name, x[name]); !strings.Contains(shown, line) {
					t.Errorf("getfattr -d lacks %q:\n%s", line, shown)
				}
			}
			// An image with a digest is "partial" until its verification,
			// which may wait behind another image's.
			waitUntil(t, "small.img complete or verified", func() bool {
				s := xattrs(t, small)["state"]
				return s == "complete" || s == "verified"
			})
			if x["size"] != strconv.FormatInt(imgs["small.img"].size, 10) || x["cached_bytes"] != x["size"] {
				t.Errorf("size %s, cached_bytes %s, want both %d", x["size"], x["cached_bytes"], imgs["small.img"].size)
			}
			if !strings.HasPrefix(x["source"], up.url) {
				t.Errorf("source = %q, want under %s", x["source"], up.url)
			}
			if _, ok := x["error"]; ok {
				t.Errorf("error attribute present without an error: %q", x["error"])
			}
			if kind.name == "origin" {
				if x["digest"] != "sha256:"+imgs["small.img"].sha256 {
					t.Errorf("digest = %q, want the origin's sha256", x["digest"])
				}
				waitUntil(t, "jammy.img verified", func() bool { return xattrs(t, big)["state"] == "verified" })
			}
			if du := duBytes(t, big); du < 256<<20 || du > 257<<20 {
				t.Errorf("du of a complete 256 MiB image = %d bytes", du)
			}
			m.unmount(t)
		})
	}
}

// TestPartialReadFetchesOnlyWhatItNeeds reads 1 MiB at the start and 1 MiB
// in the middle of a cold image (the benchmark's partial-access case) and
// checks that the upstream sent at most twice that. The count is taken
// once nothing can fetch any more: the daemon is stopped (which ends every
// fetch) and started again over the same cache, so kernel read-ahead still
// landing when dd exits cannot race the count.
func TestPartialReadFetchesOnlyWhatItNeeds(t *testing.T) {
	need(t, "dd", "getfattr", "du")
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"big.img": 256 << 20})
	up := startNginx(t, root, false)
	m := startMount(t, up.url, "")
	path := m.path("big.img")
	if du := duBytes(t, path); du != 0 {
		t.Fatalf("du of a cold image = %d", du)
	}
	run(t, "dd", "if="+path, "of=/dev/null", "bs=1M", "count=1", "status=none")
	run(t, "dd", "if="+path, "of=/dev/null", "bs=1M", "skip=128", "count=1", "status=none")
	m.unmount(t)

	m = startMount(t, up.url, m.cacheDir)
	path = m.path("big.img")
	x := xattrs(t, path)
	cached, err := strconv.ParseInt(x["cached_bytes"], 10, 64)
	if err != nil {
		t.Fatalf("cached_bytes = %q", x["cached_bytes"])
	}
	// Every cached byte was sent; nginx logs a request once it ends.
	var sent int64
	waitUntil(t, "nginx to log the fetches", func() bool {
		sent = up.bytesServed(t)["big.img"]
		return sent >= cached
	})
	t.Logf("1 MiB at 0 + 1 MiB at 128 MiB of a cold image: %d bytes sent, %d cached (%.2fx of 2 MiB)",
		sent, cached, float64(sent)/(2<<20))
	if cached < 2<<20 || sent > 4<<20 {
		t.Errorf("upstream sent %d bytes and %d are cached for two 1 MiB reads; want 2 to 4 MiB", sent, cached)
	}
	if x["state"] != "partial" {
		t.Errorf("state = %q, want partial", x["state"])
	}
	if du := duBytes(t, path); du < cached || du > cached+1<<20 {
		t.Errorf("du = %d, cached_bytes = %d", du, cached)
	}
}

func TestConcurrentColdReadersShareFetches(t *testing.T) {
	need(t, "sha256sum")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"shared.img": 96<<20 + 12345})
	up := startNginx(t, root, true)
	m := startMount(t, up.url, "")
	var wg sync.WaitGroup
	sums := make([]string, 8)
	errs := make([]error, 8)
	for i := range sums {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := runErr("sha256sum", m.path("shared.img"))
			sums[i], errs[i] = strings.Fields(out + " x")[0], err
		}()
	}
	wg.Wait()
	for i := range sums {
		if errs[i] != nil || sums[i] != imgs["shared.img"].sha256 {
			t.Fatalf("reader %d: %v %s", i, errs[i], sums[i])
		}
	}
	if got := up.bytesServed(t)["shared.img"]; got != imgs["shared.img"].size {
		t.Fatalf("8 concurrent readers made the upstream send %d bytes of a %d-byte image", got, imgs["shared.img"].size)
	}
}
