package integration

// The invariants of the model-based test (model_test.go), checked after
// every step: the daemon lives; the cache never passes --max-size; each
// image's xattrs agree with each other, with the model and with stat; the
// catalog never goes back to an older version; pinned images become
// complete and stay so. (No wrong byte is checked at every read.)

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// checkInvariants checks what must hold between steps.
func (s *sequence) checkInvariants() {
	select {
	case <-s.mnt.proc.done:
		s.t.Errorf("the daemon exited: %v", s.mnt.proc.err)
		return
	default:
	}
	s.checkUsage()
	xs := s.stableXattrs()
	for _, im := range s.m.images {
		if x, ok := xs[im.name]; ok {
			s.checkImage(im, x)
		}
	}
	s.checkPins()
	s.checkBlocks(xs)
}

// checkUsage: the data files (allocated blocks, as du counts) and the whole
// cache directory stay within --max-size, now and at the sampler's peaks.
func (s *sequence) checkUsage() {
	data, total := allocated(filepath.Join(s.cacheDir, "data")), allocated(s.cacheDir)
	s.sampler.mu.Lock()
	peakData, peakTotal := max(data, s.sampler.peakData), max(total, s.sampler.peakTotal)
	s.sampler.mu.Unlock()
	if peakData > s.m.maxSize {
		s.t.Errorf("data files took %d bytes (peak; now %d), over --max-size %d", peakData, data, s.m.maxSize)
	}
	if peakTotal > s.m.maxSize {
		s.t.Errorf("the cache directory took %d bytes (peak; now %d), over --max-size %d", peakTotal, total, s.m.maxSize)
	}
}

// xattrDump reads every image's user.imgcache.* attributes with one
// getfattr -R of the mount: name -> attribute -> value.
func (s *sequence) xattrDump() map[string]map[string]string {
	out, err := runErr("getfattr", "-R", "-d", "--absolute-names", s.mnt.dir)
	if err != nil {
		s.t.Errorf("getfattr -R -d %s: %v\n%s", s.mnt.dir, err, out)
		return nil
	}
	all := map[string]map[string]string{}
	var cur map[string]string
	for _, l := range strings.Split(out, "\n") {
		if p, ok := strings.CutPrefix(l, "# file: "); ok {
			rel, _ := filepath.Rel(s.mnt.dir, p)
			cur = map[string]string{}
			all[rel] = cur
		} else if k, v, ok := strings.Cut(l, "="); ok && cur != nil {
			if name, ok := strings.CutPrefix(k, "user.imgcache."); ok {
				cur[name] = strings.Trim(v, `"`)
			}
		}
	}
	return all
}

// stableXattrs returns the attributes of the images whose two successive
// dumps agree: each attribute is its own getxattr, so a dump taken while
// a fetch or an eviction runs may mix two moments.
func (s *sequence) stableXattrs() map[string]map[string]string {
	stable := map[string]map[string]string{}
	prev := s.xattrDump()
	for range 5 {
		cur := s.xattrDump()
		for name, x := range cur {
			if _, done := stable[name]; !done && fmt.Sprint(x) == fmt.Sprint(prev[name]) {
				stable[name] = x
			}
		}
		if len(stable) >= len(s.m.images) {
			break
		}
		prev = cur
		time.Sleep(50 * time.Millisecond)
	}
	return stable
}

// checkImage checks one image's attributes: a version the upstream
// published, not older than one the catalog showed before; a size, state
// and cached_bytes that agree; never invalid (the upstream never lies);
// the pin the sequence asked for.
func (s *sequence) checkImage(im *modelImage, x map[string]string) {
	v := im.versionOf(x["digest"])
	if v < 0 {
		s.t.Errorf("%s: digest %q is none of the versions published", im.name, x["digest"])
		return
	}
	if v < im.floor {
		s.t.Errorf("%s: the catalog shows version %d after it showed version %d", im.name, v, im.floor)
	}
	im.floor = max(im.floor, v)
	size := im.size(v)
	if x["size"] != strconv.FormatInt(size, 10) {
		s.t.Errorf("%s: user.imgcache.size %s, want %d (version %d)", im.name, x["size"], size, v)
	}
	cached, err := strconv.ParseInt(x["cached_bytes"], 10, 64)
	if err != nil {
		s.t.Errorf("%s: user.imgcache.cached_bytes %q", im.name, x["cached_bytes"])
		return
	}
	state := x["state"]
	var ok bool
	switch state {
	case "absent":
		ok = cached == 0
	case "partial": // all of it, until verified
		ok = cached > 0 && cached <= size
	case "verified":
		ok = cached == size
	default: // complete: only without a digest; invalid: never here
		ok = false
	}
	if !ok {
		s.t.Errorf("%s: state %s with cached_bytes %d of %d (version %d)", im.name, state, cached, size, v)
	}
	if x["pinned"] != boolValueOf(im.pinnedAt(v)) {
		s.t.Errorf("%s: user.imgcache.pinned %s, but version %d is %s", im.name, x["pinned"], v, pinWord(im.pinnedAt(v)))
	}
	if im.pinnedAt(v) && im.completeAt == v && state != "verified" {
		s.t.Errorf("%s: pinned and complete before, now %s (cached %d of %d)", im.name, state, cached, size)
	}
	if im.pinnedAt(v) && state == "verified" {
		im.completeAt = v
	}
}

func boolValueOf(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func pinWord(pinned bool) string {
	if pinned {
		return "pinned"
	}
	return "not pinned"
}

// pinWait bounds how long a pinned image may take to become complete. It
// is below the 30 s a failed prefetch waits to retry, so an image left to
// that retry is told from one being fetched.
const pinWait = 20 * time.Second

// checkPins: every pinned image the daemon was asked to fetch, with the
// upstream up and nothing disturbing it since, becomes complete at the
// catalog's current version.
func (s *sequence) checkPins() {
	for _, im := range s.m.images {
		if !im.pinDue || !im.pinnedAt(im.current()) {
			continue
		}
		deadline := time.Now().Add(pinWait)
		for {
			x := xattrsOrNil(s.mnt.path(im.name))
			if x["state"] == "verified" && im.versionOf(x["digest"]) == im.current() {
				im.completeAt = im.current()
				break
			}
			if time.Now().After(deadline) {
				s.t.Errorf("pinned %s not complete %v after it was due: %v", im.name, pinWait, x)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		im.pinDue = false // complete: it stays so (completeAt)
	}
}

// xattrsOrNil is xattrs without failing the test when getfattr does.
func xattrsOrNil(path string) map[string]string {
	out, err := runErr("getfattr", "-d", "--absolute-names", path)
	if err != nil {
		return map[string]string{"getfattr": strings.TrimSpace(out)}
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			if name, ok := strings.CutPrefix(k, "user.imgcache."); ok {
				m[name] = strings.Trim(v, `"`)
			}
		}
	}
	return m
}

// blocksWait bounds how long stat may show an image's old st_blocks: the
// kernel keeps an incomplete image's attributes for 1 s, and an eviction
// is told to it from a goroutine.
const blocksWait = 5 * time.Second

// checkBlocks: stat of each image shows its size and, once the kernel's
// cached attributes have expired, st_blocks covering cached_bytes.
func (s *sequence) checkBlocks(xs map[string]map[string]string) {
	deadline := time.Now().Add(blocksWait)
	for {
		bad := s.blocksDiffer(xs)
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Errorf("stat disagrees with the xattrs for %v: %s", blocksWait, bad)
			return
		}
		time.Sleep(200 * time.Millisecond)
		xs = s.stableXattrs()
	}
}

// blocksDiffer says which images' stat disagrees with their xattrs xs.
func (s *sequence) blocksDiffer(xs map[string]map[string]string) string {
	args := []string{"-c", "%n %s %b %B"}
	for _, im := range s.m.images {
		args = append(args, s.mnt.path(im.name))
	}
	out, err := runErr("stat", args...)
	if err != nil {
		return fmt.Sprintf("stat: %v: %s", err, out)
	}
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var path string
		var size, blocks, unit int64
		if _, err := fmt.Sscan(l, &path, &size, &blocks, &unit); err != nil {
			return fmt.Sprintf("stat line %q: %v", l, err)
		}
		rel, _ := filepath.Rel(s.mnt.dir, path)
		x, ok := xs[rel]
		if !ok {
			continue
		}
		cached, _ := strconv.ParseInt(x["cached_bytes"], 10, 64)
		if strconv.FormatInt(size, 10) != x["size"] || blocks*unit != (cached+511)/512*512 {
			bad = append(bad, fmt.Sprintf("%s: st_size %d st_blocks %d x %d, xattrs size %s cached_bytes %d",
				rel, size, blocks, unit, x["size"], cached))
		}
	}
	return strings.Join(bad, "; ")
}
