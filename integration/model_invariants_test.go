package integration

// The invariants of the model-based test (model_test.go), checked after
// every step: the daemon lives; the cache never passes --max-size; each
// image shows a version the upstream published, never older than one
// shown before, with a size, state, cached_bytes and st_blocks that agree;
// pinned images become complete and stay so. And at every read: no wrong
// byte, no failure the upstream does not explain (checkReads).

import (
	"fmt"
	"path/filepath"
	"slices"
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
	views := s.settledViews()
	for _, im := range s.m.images {
		if v, ok := views[im.name]; ok {
			s.checkImage(im, v)
		}
	}
	s.checkPins()
}

// indexGrowth is how far the whole cache directory may pass --max-size:
// the index counts against the limit as last measured, and badger grows
// its files between two measures (docs/lifecycle.md, "Not done"). The
// data files get no slack.
const indexGrowth = 1 << 20

// checkUsage: the data files (allocated blocks, as du counts) stay within
// --max-size, and the whole cache directory within it and indexGrowth,
// now and at the sampler's peaks. How far the directory passed the limit
// is kept for the figures.
func (s *sequence) checkUsage() {
	data, total := allocated(filepath.Join(s.cacheDir, "data")), allocated(s.cacheDir)
	s.sampler.mu.Lock()
	peakData, peakTotal := max(data, s.sampler.peakData), max(total, s.sampler.peakTotal)
	s.sampler.mu.Unlock()
	if peakData > s.m.maxSize {
		s.t.Errorf("data files took %d bytes (peak; now %d), over --max-size %d", peakData, data, s.m.maxSize)
	}
	s.overLimit = max(s.overLimit, peakTotal-s.m.maxSize)
	if peakTotal > s.m.maxSize+indexGrowth {
		s.t.Errorf("the cache directory took %d bytes (peak; now %d), over --max-size %d and %d for the index's growth",
			peakTotal, total, s.m.maxSize, indexGrowth)
	}
}

// view is what an image shows through the mount at one moment: stat's
// mtime (its version), size and st_blocks, and its user.imgcache.* xattrs.
type view struct {
	fileStat
	x map[string]string
}

type fileStat struct{ mtime, size, blocks int64 }

func (v view) cached() int64 {
	n, err := strconv.ParseInt(v.x["cached_bytes"], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// blocksAgree: st_blocks covers cached_bytes, as the mount promises.
func (v view) blocksAgree() bool { return v.blocks == (v.cached()+511)/512 }

// views takes a view of every image whose state held still while it was
// taken: each attribute is its own getxattr, so a fetch or an eviction
// running meanwhile may mix two moments. Such images are left out.
func (s *sequence) views() map[string]view {
	before := s.statAll()
	xs := []map[string]map[string]string{s.xattrDump()}
	views := map[string]view{}
	for range 5 {
		xs = append(xs, s.xattrDump())
		after := s.statAll()
		for name, st := range after {
			x, prev := xs[len(xs)-1][name], xs[len(xs)-2][name]
			if _, done := views[name]; !done && x != nil && st == before[name] && fmt.Sprint(x) == fmt.Sprint(prev) {
				views[name] = view{st, x}
			}
		}
		if len(views) == len(s.m.images) {
			break
		}
		before = after
		time.Sleep(50 * time.Millisecond)
	}
	return views
}

// blocksWait bounds how long stat may show an image's old st_blocks: the
// kernel keeps an incomplete image's attributes for 1 s, and an eviction
// is told to it from a goroutine.
const blocksWait = 5 * time.Second

// settledViews are views in which st_blocks agrees with cached_bytes,
// waiting for that up to blocksWait; then it is a defect.
func (s *sequence) settledViews() map[string]view {
	var views map[string]view
	var bad []string
	if !poll(blocksWait, func() bool {
		views, bad = s.views(), nil
		for name, v := range views {
			if !v.blocksAgree() {
				bad = append(bad, fmt.Sprintf("%s: st_blocks %d, cached_bytes %d", name, v.blocks, v.cached()))
			}
		}
		return len(bad) == 0
	}) {
		s.t.Errorf("stat disagrees with the xattrs for %v: %s", blocksWait, strings.Join(bad, "; "))
	}
	return views
}

// statAll runs stat on every image: name -> mtime, size, st_blocks.
func (s *sequence) statAll() map[string]fileStat {
	args := []string{"-c", "%n %Y %s %b %B"}
	for _, im := range s.m.images {
		args = append(args, s.mnt.path(im.name))
	}
	out, err := runErr("stat", args...)
	if err != nil {
		s.t.Errorf("stat: %v: %s", err, out)
		return nil
	}
	st := map[string]fileStat{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var path string
		var v fileStat
		var unit int64
		if _, err := fmt.Sscan(l, &path, &v.mtime, &v.size, &v.blocks, &unit); err != nil || unit != 512 {
			s.t.Errorf("stat line %q: %v (block unit %d)", l, err, unit)
			continue
		}
		rel, _ := filepath.Rel(s.mnt.dir, path)
		st[rel] = v
	}
	return st
}

// xattrDump reads every image's user.imgcache.* attributes, walking the
// mount: name -> attribute -> value.
func (s *sequence) xattrDump() map[string]map[string]string {
	all, err := xattrTree(s.mnt.dir)
	if err != nil {
		s.t.Errorf("reading the attributes under %s: %v", s.mnt.dir, err)
		return nil
	}
	return all
}

// checkImage checks one image's view: a version the upstream published,
// not older than one shown before, with its size and digest; a state and
// cached_bytes that agree, never invalid (the upstream never lies); the
// pin the sequence asked for.
func (s *sequence) checkImage(im *modelImage, vw view) {
	v := im.versionAt(vw.mtime)
	if v < 0 {
		s.t.Errorf("%s: mtime %d is none of the versions published", im.name, vw.mtime)
		return
	}
	if v < im.floor {
		s.t.Errorf("%s: the catalog shows version %d after it showed version %d", im.name, v, im.floor)
	}
	im.floor = max(im.floor, v)
	size, x := im.size(v), vw.x
	if vw.size != size || x["size"] != strconv.FormatInt(size, 10) || x["digest"] != im.versions[v].digest {
		s.t.Errorf("%s: st_size %d, user.imgcache.size %s, digest %s; version %d has %d bytes, %s",
			im.name, vw.size, x["size"], x["digest"], v, size, im.versions[v].digest)
	}
	cached, state := vw.cached(), x["state"]
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
		var vw view
		if poll(pinWait, func() bool {
			var ok bool
			vw, ok = s.views()[im.name]
			return ok && vw.x["state"] == "verified" && im.versionAt(vw.mtime) == im.current()
		}) {
			im.completeAt = im.current()
		} else {
			s.t.Errorf("pinned %s not complete %v after it was due: %+v", im.name, pinWait, vw)
		}
		im.pinDue = false // complete: it stays so (completeAt)
	}
}

// catalogWait bounds how long the catalog may take to show the versions
// the upstream serves, beyond --catalog-ttl.
const catalogWait = 30 * time.Second

// checkCatalogCatchesUp: with the upstream up, every image shows the
// upstream's current version within --catalog-ttl (and catalogWait).
func (s *sequence) checkCatalogCatchesUp(ttl time.Duration) {
	var stale []string
	if !poll(ttl+catalogWait, func() bool {
		stale = nil
		views := s.views()
		for _, im := range s.m.images {
			if vw, ok := views[im.name]; !ok || im.versionAt(vw.mtime) != im.current() {
				stale = append(stale, fmt.Sprintf("%s shows version %d of %d", im.name, im.versionAt(vw.mtime), im.current()))
			}
		}
		return len(stale) == 0
	}) {
		s.t.Errorf("the catalog did not catch up with the upstream within --catalog-ttl %v and %v: %s",
			ttl, catalogWait, strings.Join(stale, "; "))
	}
}

// readResult is what a read gave.
type readResult struct {
	possible []int // the versions the read may give
	mtime    int64 // a new open's: its version, if known (else -1)
	got      []byte
	failure  string
	err      error
}

// checkReads checks reads that ran at once: floors are the versions the
// mount had shown before they began.
func (s *sequence) checkReads(reads []readSpec, res []readResult, floors []int, killed bool) {
	imgs := make([]*modelImage, len(reads))
	for i, rd := range reads {
		imgs[i] = rd.img
	}
	for i, rd := range reads {
		r, im := res[i], rd.img
		if r.err != nil {
			s.t.Errorf("read %s: %v", rd, r.err)
			continue
		}
		if v := im.versionAt(r.mtime); rd.held == nil && v >= 0 {
			r.possible = []int{v}
		}
		if rd.held == nil && len(r.possible) == 1 {
			s.checkNewOpen(im, r.possible[0], floors[i], rd.String())
		}
		failed := r.failure != ""
		s.reads++
		s.readBytes += int64(len(r.got))
		if failed {
			s.failedReads++
			// Only reads of bytes the upstream cannot give may fail: it is
			// down, or this open's version is no longer the upstream's, or
			// a held open repeats a failure for 2 s; in strict mode also
			// reads of images that may not fit at once beside the pinned
			// and open ones (strict serves nothing it has not stored whole).
			mayFail := !s.m.up || killed || slices.Min(r.possible) < im.current() ||
				rd.held != nil && time.Since(rd.held.failedAt) < 2500*time.Millisecond ||
				s.m.strict && !s.m.fits(imgs...)
			if rd.held != nil {
				rd.held.failedAt = time.Now()
			}
			if !mayFail {
				s.t.Errorf("read %s failed (%s) with the upstream up and serving the version read: %s",
					rd, r.failure, s.imageError(im))
			}
		}
		match := im.match(r.possible, rd.off, rd.n, r.got, failed)
		if len(match) == 0 {
			s.mismatches++
			s.t.Errorf("WRONG BYTES: read %s (of version %v): %s", rd, r.possible, im.explain(r.possible, rd.off, rd.n, r.got))
			continue
		}
		if rd.held != nil {
			rd.held.possible = match
		}
	}
}

// opened says which versions a new open of im reads: the one its
// descriptor's mtime names, which must be one published and no older
// than one the catalog showed before (a new open sees the new version).
func (s *sequence) opened(im *modelImage, r *reader) []int {
	v := im.versionAt(r.mtime)
	if v < 0 {
		s.t.Errorf("open of %s: its descriptor's mtime %d is none of the versions published", im.name, r.mtime)
		return im.newOpenVersions()
	}
	s.checkNewOpen(im, v, im.floor, "open of "+im.name)
	return []int{v}
}

// checkNewOpen: a new open read version v, so the catalog showed it; it
// had shown floor before the open began.
func (s *sequence) checkNewOpen(im *modelImage, v, floor int, what string) {
	if v < floor {
		s.t.Errorf("%s read version %d after the catalog showed version %d", what, v, floor)
	}
	im.floor = max(im.floor, v)
}
