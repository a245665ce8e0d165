package integration

import (
	"bytes"
	"cmp"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fleet tests put an HTTP cache tier between an origin and several
// mounts, each with its own cache directory, configured as
// docs/fleet.md says (the configurations are read from there), and count
// in the origin's access log how many times each byte of each image was
// sent. Knobs for measuring (bench/fleet.sh): IMGCACHE_FLEET_MOUNTS (3)
// and IMGCACHE_FLEET_MB, the size of the image read whole (256, or 64
// without a tier).

// fleetImages are the images of a fleet test: whole.img is read whole by
// every mount, part.img 1 MiB at a few offsets.
type fleetImages struct {
	root        string
	whole, part image
}

func makeFleetImages(t *testing.T, wholeMB int) fleetImages {
	t.Helper()
	root := t.TempDir()
	wholeMB = envInt(t, "IMGCACHE_FLEET_MB", wholeMB)
	imgs := makeImages(t, root, map[string]int64{"whole.img": int64(wholeMB) * mib, "part.img": 64 * mib})
	// Images on an origin are seldom a minute old: Squid's heuristic
	// freshness (a share of the age since Last-Modified) needs some age.
	old := time.Now().Add(-30 * 24 * time.Hour)
	for name := range imgs {
		if err := os.Chtimes(filepath.Join(root, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	return fleetImages{root: root, whole: imgs["whole.img"], part: imgs["part.img"]}
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// partReads are the reads of part.img by mount i: offset and length in
// bytes; one is not aligned to chunks, one differs between mounts.
func partReads(i int) [][2]int64 {
	return [][2]int64{{7 * mib, mib}, {23*mib + mib/2, mib}, {50 * mib, mib}, {int64(30+2*(i%10)) * mib, mib}}
}

// readFleet has every mount read whole.img whole (sha256sum) and part.img
// in pieces (dd), all mounts at once, each tool in a process of its own,
// and checks every byte read.
func readFleet(t *testing.T, mounts []*mount, fi fleetImages) {
	t.Helper()
	part, err := os.ReadFile(filepath.Join(fi.root, fi.part.name))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(mounts))
	for i, m := range mounts {
		wg.Add(2)
		go func() {
			defer wg.Done()
			out, err := runErr("sha256sum", m.path(fi.whole.name))
			if err != nil || !strings.HasPrefix(out, fi.whole.sha256) {
				errs <- fmt.Errorf("mount %d: sha256sum %s: %v %q, want %s", i, fi.whole.name, err, out, fi.whole.sha256)
			}
		}()
		go func() {
			defer wg.Done()
			tmp := filepath.Join(t.TempDir(), "piece")
			for _, r := range partReads(i) {
				const bs = mib / 2
				out, err := runErr("dd", "if="+m.path(fi.part.name), "of="+tmp, "bs=512K",
					fmt.Sprintf("skip=%d", r[0]/bs), fmt.Sprintf("count=%d", r[1]/bs), "status=none")
				got, _ := os.ReadFile(tmp)
				if err != nil || !bytes.Equal(got, part[r[0]:r[0]+r[1]]) {
					errs <- fmt.Errorf("mount %d: dd of %s at %d: %v %s; got %d bytes, not the image's", i, fi.part.name, r[0], err, out, len(got))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// fleetMounts starts n mounts of upstream, each with its own cache
// directory.
func fleetMounts(t *testing.T, n int, upstream string, flags ...string) []*mount {
	t.Helper()
	ms := make([]*mount, n)
	for i := range ms {
		ms[i] = startMount(t, upstream, "", flags...)
	}
	return ms
}

// egress sums what was sent of an image and says how many times its most
// sent byte was sent.
func egress(spans []span) (total int64, most int) {
	type edge struct {
		at    int64
		delta int
	}
	var edges []edge
	for _, s := range spans {
		total += s.n
		edges = append(edges, edge{s.off, 1}, edge{s.off + s.n, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			return cmp.Compare(a.at, b.at)
		}
		return a.delta - b.delta // ends before starts: touching spans do not overlap
	})
	cur := 0
	for _, e := range edges {
		cur += e.delta
		most = max(most, cur)
	}
	return total, most
}

// checkEgress checks that the origin sent each byte of each image at most
// once, and every byte of the image read whole, and logs the figures.
func checkEgress(t *testing.T, o *fleetOrigin, fi fleetImages, mounts int, tierName string) {
	t.Helper()
	sent := o.sent(t)
	wholeTotal, wholeMost := egress(sent[fi.whole.name])
	partTotal, partMost := egress(sent[fi.part.name])
	t.Logf("%s, %d mounts: origin sent %s whole (%d MiB) %.2fx, %d MiB of %s for %d reads of 1 MiB",
		tierName, mounts, fi.whole.name, fi.whole.size/mib, float64(wholeTotal)/float64(fi.whole.size),
		partTotal/mib, fi.part.name, mounts*len(partReads(0)))
	if wholeTotal != fi.whole.size || wholeMost != 1 {
		t.Errorf("origin sent %d bytes of %s (%d bytes), some %d times; want each byte once",
			wholeTotal, fi.whole.name, fi.whole.size, wholeMost)
	}
	if partMost > 1 {
		t.Errorf("origin sent some bytes of %s %d times (%d bytes in all); want each at most once", fi.part.name, partMost, partTotal)
	}
}

var rangeSpec = regexp.MustCompile(`^bytes=(\d+)-(\d+)$`)

// checkRequests checks what the mounts asked the tier for: image bytes
// only with GET, one range aligned to chunks, If-Range with the origin's
// ETag, nothing that makes a cache go to the origin; and a HEAD per image
// and mount at most (the first listing of an HTML directory).
func checkRequests(t *testing.T, tr *tier, o *fleetOrigin, fi fleetImages, mounts int) {
	t.Helper()
	sizes, etags := map[string]int64{}, map[string]string{}
	for _, img := range []image{fi.whole, fi.part} {
		resp, err := http.Head(o.url + img.name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		sizes[img.name], etags[img.name] = img.size, resp.Header.Get("ETag")
	}
	heads := map[string]int{}
	gets := 0
	for _, r := range tr.requests(t) {
		size, ok := sizes[strings.TrimPrefix(r.path, "/")]
		if !ok {
			continue // the catalog
		}
		name := strings.TrimPrefix(r.path, "/")
		switch r.method {
		case "HEAD":
			heads[name]++
			continue
		case "GET":
			gets++
		default:
			t.Errorf("tier got %s", r.line)
			continue
		}
		m := rangeSpec.FindStringSubmatch(r.rng)
		if m == nil {
			t.Errorf("tier got a GET without one range: %s", r.line)
			continue
		}
		first, _ := strconv.ParseInt(m[1], 10, 64)
		last, _ := strconv.ParseInt(m[2], 10, 64)
		if first%mib != 0 || (last+1)%mib != 0 && last+1 != size {
			t.Errorf("tier got a range not aligned to 1 MiB chunks: %s", r.line)
		}
		if r.ifRange != etags[name] || r.cacheControl != "" || r.pragma != "" {
			t.Errorf("tier got If-Range %q (the ETag is %q), Cache-Control %q, Pragma %q: %s",
				r.ifRange, etags[name], r.cacheControl, r.pragma, r.line)
		}
	}
	for name, n := range heads {
		if n > mounts {
			t.Errorf("tier got %d HEADs of %s from %d mounts; want one per mount at most", n, name, mounts)
		}
	}
	if gets == 0 {
		t.Errorf("tier got no GET of an image")
	}
}

// TestFleetNginxTier: three mounts read the same image whole and another
// in pieces through an nginx proxy_cache + slice tier: the origin sends
// each byte once.
func TestFleetNginxTier(t *testing.T) {
	need(t, "sha256sum", "dd")
	n := envInt(t, "IMGCACHE_FLEET_MOUNTS", 3)
	fi := makeFleetImages(t, 256)
	o := startFleetOrigin(t, fi.root)
	tr := startNginxTier(t, o)
	readFleet(t, fleetMounts(t, n, tr.url), fi)
	checkEgress(t, o, fi, n, "nginx tier")
	checkRequests(t, tr, o, fi, n)
}

// TestFleetSquidTier: the same through Squid as a forward proxy
// (--proxy), which fetches whole images: a read of 1 MiB of part.img
// costs the origin all of it, once.
func TestFleetSquidTier(t *testing.T) {
	need(t, "sha256sum", "dd")
	n := envInt(t, "IMGCACHE_FLEET_MOUNTS", 3)
	fi := makeFleetImages(t, 256)
	o := startFleetOrigin(t, fi.root)
	tr := startSquidTier(t)
	readFleet(t, fleetMounts(t, n, o.url, "--proxy", tr.url), fi)
	checkEgress(t, o, fi, n, "Squid tier")
	checkRequests(t, tr, o, fi, n)
	if total, _ := egress(o.sent(t)[fi.part.name]); total != fi.part.size {
		t.Errorf("origin sent %d bytes of %s through Squid; want all %d of it (range_offset_limit none)", total, fi.part.name, fi.part.size)
	}
}

// TestFleetWithoutTier is the contrast: three mounts straight on the
// origin make it send the image read whole three times (a smaller one:
// the ratio is the point).
func TestFleetWithoutTier(t *testing.T) {
	need(t, "sha256sum", "dd")
	n := envInt(t, "IMGCACHE_FLEET_MOUNTS", 3)
	fi := makeFleetImages(t, 64)
	o := startFleetOrigin(t, fi.root)
	readFleet(t, fleetMounts(t, n, o.url), fi)
	sent := o.sent(t)
	wholeTotal, wholeMost := egress(sent[fi.whole.name])
	partTotal, _ := egress(sent[fi.part.name])
	t.Logf("no tier, %d mounts: origin sent %s whole (%d MiB) %.2fx, %d MiB of %s for %d reads of 1 MiB",
		n, fi.whole.name, fi.whole.size/mib, float64(wholeTotal)/float64(fi.whole.size), partTotal/mib, fi.part.name, n*len(partReads(0)))
	if wholeTotal < int64(n)*fi.whole.size || wholeMost != n {
		t.Errorf("without a tier the origin sent %d bytes of %s (%d bytes), each at most %d times; want every byte %d times",
			wholeTotal, fi.whole.name, fi.whole.size, wholeMost, n)
	}
}

// TestFleetTierDown: a mount of the tier with the origin as --mirror
// reads from the origin while the tier is down, as docs/fleet.md shows.
func TestFleetTierDown(t *testing.T) {
	need(t, "sha256sum", "dd", "getfattr")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 8 * mib, "b.img": 3*mib + 5})
	o := startFleetOrigin(t, root)
	tr := startNginxTier(t, o)
	m := startMount(t, tr.url, "", "--mirror", o.url)
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatalf("a.img through the tier: sha256 %s", got)
	}
	if err := tr.proc.stop(); err != nil {
		t.Fatalf("stopping the tier: %v", err)
	}
	before := o.sent(t)["b.img"]
	if got := sha256sum(t, m.path("b.img")); got != imgs["b.img"].sha256 {
		t.Fatalf("b.img with the tier down: sha256 %s", got)
	}
	if got := xattrs(t, m.dir)["upstream_active"]; got != o.url {
		t.Fatalf("user.imgcache.upstream_active = %q with the tier down; want the origin %s", got, o.url)
	}
	if total, _ := egress(o.sent(t)["b.img"]); total-sentBytes(before) != imgs["b.img"].size {
		t.Fatalf("the origin sent %d bytes of b.img while the tier was down; want all %d", total, imgs["b.img"].size)
	}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatalf("a.img, cached, with the tier down: sha256 %s", got)
	}
}

func sentBytes(spans []span) int64 {
	total, _ := egress(spans)
	return total
}

// TestKnownImageCostsNoRequest: after a restart, the catalog's refresh of
// an HTML listing asks about no image it knows, and opening or reading a
// cached image sends nothing: only the listing is fetched.
func TestKnownImageCostsNoRequest(t *testing.T) {
	need(t, "sha256sum", "getfattr", "sh")
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 3 * mib, "sub/b.img": 2 * mib})
	ng := startNginx(t, root, false)
	cacheDir := t.TempDir()
	m := startMount(t, ng.url, cacheDir)
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "complete")
	m.unmount(t)

	mark := len(accessLines(t, ng.accessLog))
	// The restart's refresh is the first in its second (timestamps have
	// whole seconds).
	restart := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(restart))
	m = startMount(t, ng.url, cacheDir)
	waitUntil(t, "the catalog to be refreshed after the restart", func() bool {
		at, err := time.Parse(time.RFC3339, xattrs(t, m.dir)["catalog_refreshed"])
		return err == nil && !at.Before(restart)
	})
	readsRight(t, m.path("a.img"), imgs["a.img"].sha256, "complete")
	run(t, "sh", "-c", `exec 3<"$1"`, "_", m.path("sub/b.img")) // an open, no read
	for _, l := range accessLines(t, ng.accessLog)[mark:] {
		if f := strings.Fields(l); len(f) < 2 || f[0] != "GET" || !strings.HasSuffix(f[1], "/") && f[1] != "/.imgcache/index.json" && f[1] != "/streams/v1/index.json" { // listings; is it an image server?
			t.Errorf("after the restart the origin got more than the catalog's listings: %s", l)
		}
	}
}

func accessLines(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}
