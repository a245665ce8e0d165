package integration

// The system the model-based test (model_test.go) drives: imgcache serve
// over a directory the test publishes into, stops and restarts; the
// imgcache mount over it; the management commands.

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/xattr"

	"github.com/imgcache/imgcache/control"
)

// sequence is one run of the model against a real mount.
type sequence struct {
	t        *testing.T
	m        *model
	root     string // the directory imgcache serve publishes
	addr     string // its address, the same across restarts
	upstream *proc  // nil while stopped
	mnt      *mount
	cacheDir string
	sampler  *sampler
	done     []string // the steps run, for the report

	reads, failedReads, mismatches int
	readBytes                      int64
	overLimit                      int64 // most the whole cache directory passed --max-size by
}

func startSequence(t *testing.T, m *model) *sequence {
	s := &sequence{t: t, m: m, root: t.TempDir(), cacheDir: t.TempDir()}
	for _, im := range m.images {
		s.publish(im)
	}
	s.startUpstream()
	s.mnt = startMount(t, s.url(), s.cacheDir, m.flags...)
	s.sampler = sample(s.cacheDir)
	t.Cleanup(func() {
		if s.sampler != nil {
			s.sampler.finish()
		}
	})
	return s
}

func (s *sequence) url() string { return "http://" + s.addr + "/" }

// publish writes the image's current version as a publisher would: a new
// file renamed over the old one (a new inode, mtime, ETag and digest).
// The new file's name is hidden, so no listing shows it.
func (s *sequence) publish(im *modelImage) {
	p := filepath.Join(s.root, im.name)
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".new")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	v := im.versions[im.current()]
	if err := os.WriteFile(tmp, v.data, 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chtimes(tmp, time.Unix(v.mtime, 0), time.Unix(v.mtime, 0)); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		s.t.Fatal(err)
	}
}

// startUpstream starts imgcache serve: on a free port the first time,
// then on the same address, so the mount finds it again.
func (s *sequence) startUpstream() {
	listen := s.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	s.upstream = start(s.t, "serving ", bin, "serve", "--listen", listen, s.root)
	if s.addr == "" {
		line := s.upstream.readyLine("serving ")
		u := line[strings.LastIndex(line, " ")+1:]
		s.addr = strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
	}
}

func (s *sequence) stopUpstream() {
	if err := s.upstream.stop(); err != nil {
		s.t.Errorf("imgcache serve exited with %v after SIGTERM", err)
	}
	s.upstream = nil
}

// remount mounts the cache directory again, with the same flags.
func (s *sequence) remount() {
	s.mnt = startMount(s.t, s.url(), s.cacheDir, s.m.flags...)
}

// manage runs an imgcache management command on the sequence's cache.
func (s *sequence) manage(args ...string) cliResult {
	return cli(s.t, append(args, "--cache-dir", s.cacheDir)...)
}

// manageJSON runs a management command with --json that must succeed.
func (s *sequence) manageJSON(v any, args ...string) {
	s.t.Helper()
	r := s.manage(append(args, "--json")...)
	if r.code != 0 {
		s.t.Errorf("imgcache %s: exit %d: %s", strings.Join(args, " "), r.code, strings.TrimSpace(r.stderr))
		return
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		s.t.Errorf("imgcache %s --json: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
}

func (s *sequence) manageImage(cmd, name string) control.Image {
	var img control.Image
	s.manageJSON(&img, cmd, name)
	return img
}

// imageError is the image's user.imgcache.error, for reports.
func (s *sequence) imageError(im *modelImage) string {
	v, err := xattr.Get(s.mnt.path(im.name), xattrPrefix+"error")
	switch {
	case errors.Is(err, xattr.ENOATTR):
		return "no user.imgcache.error"
	case err != nil:
		return "user.imgcache.error unread: " + err.Error()
	}
	return "user.imgcache.error " + string(v)
}

// evict runs imgcache evict NAME: a pinned image is refused, an open one
// may be (its version may be the one the catalog shows), any other is
// evicted. A release reaches the daemon after close(2) returns, and an
// unpinned image's prefetch ends its window, so "open" is retried a while.
func (s *sequence) evict(im *modelImage) {
	held := slices.ContainsFunc(s.m.opens, func(h *heldOpen) bool { return h.img == im })
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := s.manage("evict", im.name)
		switch {
		case im.pinned && !im.surelyPinned(): // the catalog may show a version the pin is not on
			return
		case im.pinned:
			if r.code == 0 || !strings.Contains(r.stderr, "pinned") {
				s.t.Errorf("imgcache evict of pinned %s: exit %d %q, want it refused as pinned", im.name, r.code, r.stderr)
			}
			return
		case r.code == 0:
			return
		case strings.Contains(r.stderr, "open") && (held || time.Now().Before(deadline)):
			if held {
				return
			}
			time.Sleep(100 * time.Millisecond)
		default:
			s.t.Errorf("imgcache evict %s (not pinned, not held open): exit %d %q", im.name, r.code, strings.TrimSpace(r.stderr))
			return
		}
	}
}

// evictAll runs imgcache evict --all: no pinned image is evicted.
func (s *sequence) evictAll() {
	var r control.EvictResult
	s.manageJSON(&r, "evict", "--all")
	s.noPinned("evict --all", r.Evicted)
}

// prune runs imgcache prune: no pinned image is evicted, and the usage it
// reports is within the limit.
func (s *sequence) prune() {
	var r control.PruneResult
	s.manageJSON(&r, "prune")
	s.noPinned("prune", r.Evicted)
	if r.UsageBytes > s.m.maxSize {
		s.t.Errorf("imgcache prune reports usage %d, over --max-size %d", r.UsageBytes, s.m.maxSize)
	}
}

// clean runs imgcache clean: nothing stalled for 24 h and no image failed
// verification (the upstream never lies), so nothing is removed.
func (s *sequence) clean() {
	var r control.CleanResult
	s.manageJSON(&r, "clean")
	if len(r.Removed) > 0 {
		s.t.Errorf("imgcache clean removed %v: no image is stalled or invalid", r.Removed)
	}
}

// verify runs imgcache verify [NAME]: nothing was damaged at rest.
func (s *sequence) verify(im *modelImage) {
	args := []string{"verify"}
	if im != nil {
		args = append(args, im.name)
	}
	var r control.VerifyResult
	s.manageJSON(&r, args...)
	if r.BadChunks > 0 || r.Invalid > 0 {
		s.t.Errorf("imgcache %s: %d bad chunks, %d invalid images: %+v", strings.Join(args, " "), r.BadChunks, r.Invalid, r.Reports)
	}
}

func (s *sequence) noPinned(what string, evicted []string) {
	for _, im := range s.m.images {
		if im.surelyPinned() && slices.Contains(evicted, im.name) {
			s.t.Errorf("imgcache %s evicted pinned %s", what, im.name)
		}
	}
}

// finish ends a sequence: with the upstream up and no open held, every
// image reads whole and right, verify finds nothing wrong, the catalog
// catches up with the upstream (when --catalog-ttl is short), and the
// daemon unmounts and exits 0 on SIGTERM.
func (s *sequence) finish() {
	if !s.m.up {
		s.startUpstream()
		s.m.up = true
	}
	s.closeAll(s.m.opens)
	s.m.opens = nil
	for _, im := range s.m.images { // one at a time: strict mode needs room for each whole
		s.readAll([]readSpec{{img: im, n: im.maxSize() + 1}})
	}
	s.verify(nil)
	s.checkInvariants()
	if s.m.ttl < time.Minute {
		s.checkCatalogCatchesUp(s.m.ttl)
	}
	s.mnt.unmount(s.t)
}

// kill sends SIGKILL to the daemon and detaches its dead mount.
func (s *sequence) kill() {
	s.mnt.proc.kill()
	if err := syscall.Unmount(s.mnt.dir, syscall.MNT_DETACH); err != nil {
		s.t.Errorf("detaching the killed daemon's mount: %v", err)
	}
}

// closeAll ends the processes of held opens (once: they may be closed
// already).
func (s *sequence) closeAll(hs []*heldOpen) {
	for _, h := range hs {
		if h.r != nil {
			h.r.close()
			h.r = nil
		}
	}
}
