package integration

// The model-based test. Like mountpoint-s3's reference-model tests, a
// seeded random sequence of operations runs against the real thing (the
// imgcache binary mounting a real FUSE filesystem over imgcache serve,
// which the test stops, restarts and publishes new versions on), and a
// model that is as simple as possible says what must be true: every byte
// read is compared with the bytes the upstream held, and the invariants
// are checked after every step.
//
// The files: this one (the model and the driver), model_ops_test.go (the
// operations: how they are chosen and how they are run),
// model_invariants_test.go (what must hold after each step),
// model_system_test.go (the upstream, the mount, the management commands)
// and model_reader_test.go (the processes that read).
//
// Replaying: the operations, their arguments and the images' bytes come
// from the seed alone, never from what the system answered, so a seed
// replays the same sequence (the timing of processes is the machine's).

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// version is one publication of an image by the upstream. Its mtime
// (seconds, distinct for every publication of a sequence) tells which
// version a file or a descriptor shows: stat's mtime is the upstream's.
type version struct {
	data   []byte
	digest string // "sha256:<hex>", as user.imgcache.digest shows it
	mtime  int64
}

// modelImage is what the upstream held under one name: every version it
// published, oldest first. The last is what it serves now.
type modelImage struct {
	name     string
	versions []version
	pinned   bool // the sequence pinned it (and did not unpin it since)
	// pinVersion is the version the pin landed on: the catalog's when the
	// sequence pinned the image, as the answer to imgcache pin says.
	pinVersion int
	// pinDue: the daemon was asked to fetch the pinned image with the
	// upstream up and nothing disturbed it since, so it must become
	// complete without delay (a failed prefetch waits 30 s to retry).
	pinDue bool
	// floor is the oldest version the daemon's catalog may still show:
	// raised when the catalog is seen to show a newer one. A new open
	// reads a version in [floor, current].
	floor int
	// completeAt is the version seen complete while pinned, with no
	// kill -9 since (-1: none): a pinned image is never evicted, so it
	// must stay complete.
	completeAt int
}

// pinnedAt says whether version v of the image must show pinned: the
// pin is on the name, so every version from the one it landed on is.
func (im *modelImage) pinnedAt(v int) bool {
	return im.pinned && v >= im.pinVersion
}

// surelyPinned: whichever version the catalog shows now is pinned.
func (im *modelImage) surelyPinned() bool {
	return im.pinnedAt(im.floor) && im.pinnedAt(im.current())
}

func (im *modelImage) current() int     { return len(im.versions) - 1 }
func (im *modelImage) size(v int) int64 { return int64(len(im.versions[v].data)) }

// maxSize is the largest size any version of the image had.
func (im *modelImage) maxSize() int64 {
	var n int64
	for v := range im.versions {
		n = max(n, im.size(v))
	}
	return n
}

// newOpenVersions are the versions a new open of the image may read.
func (im *modelImage) newOpenVersions() []int {
	var vs []int
	for v := im.floor; v <= im.current(); v++ {
		vs = append(vs, v)
	}
	return vs
}

// versionAt is the version published with the mtime, or -1.
func (im *modelImage) versionAt(mtime int64) int {
	for v := range im.versions {
		if im.versions[v].mtime == mtime {
			return v
		}
	}
	return -1
}

// expected is what a read of n bytes at off gives of version v.
func (im *modelImage) expected(v int, off, n int64) []byte {
	d := im.versions[v].data
	if off >= int64(len(d)) {
		return nil
	}
	return d[off:min(off+n, int64(len(d)))]
}

// match returns the versions among possible whose bytes a read of n at
// off returned. A failed read must have returned a prefix of them. The
// empty result is a wrong byte.
func (im *modelImage) match(possible []int, off, n int64, got []byte, failed bool) []int {
	var ok []int
	for _, v := range possible {
		want := im.expected(v, off, n)
		if bytes.Equal(got, want) || (failed && len(got) < len(want) && bytes.Equal(got, want[:len(got)])) {
			ok = append(ok, v)
		}
	}
	return ok
}

// explain says how a read that matched none of the possible versions
// differs from each, and whether its bytes are another version's or zeros.
func (im *modelImage) explain(possible []int, off, n int64, got []byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "got %d bytes", len(got))
	for _, v := range possible {
		want := im.expected(v, off, n)
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		fmt.Fprintf(&b, "; version %d: want %d bytes, first difference at offset %d", v, len(want), off+int64(i))
		if i < len(got) {
			end := min(len(got), i+16)
			fmt.Fprintf(&b, " (got %x", got[i:end])
			if i < len(want) {
				fmt.Fprintf(&b, ", want %x", want[i:min(len(want), end)])
			}
			b.WriteString(")")
		}
	}
	for v := range im.versions {
		if !slices.Contains(possible, v) && bytes.Equal(got, im.expected(v, off, n)) {
			fmt.Fprintf(&b, "; the bytes are version %d's", v)
		}
	}
	if len(got) > 0 && bytes.Count(got, []byte{0}) == len(got) {
		b.WriteString("; the bytes are all zeros")
	}
	return b.String()
}

// model is the state the operations are chosen from: only the seed and
// the operations chosen so far decide it, never what the system answered
// (floor and an open's possible versions are knowledge, not plan: they
// never steer the choice of operations).
type model struct {
	seed         uint64
	rng          *rand.Rand
	images       []*modelImage
	chunk        int64
	maxSize      int64
	ttl          time.Duration // --catalog-ttl
	strict       bool          // --verify strict: a read waits for the whole image, verified
	flags        []string      // the mount's flags
	up           bool          // the upstream serves
	opens        []*heldOpen
	opened       int // opens held so far, to name them
	publications int // versions published so far: their mtimes
}

// heldOpen is an image kept open by a process of its own across other
// operations.
type heldOpen struct {
	id   int
	img  *modelImage
	size int64 // of the version current at the open: where reads are aimed
	// possible are the versions the descriptor may be reading, narrowed
	// by every read: an open keeps the version it opened.
	possible []int
	failedAt time.Time // its last failed read: failures repeat for 2 s
	r        *reader
}

// indexRoom is what the index takes of --max-size (its measured size is
// taken off the limit): pins and held opens are planned to leave it free.
const indexRoom = 3 << 20

// newModel draws a sequence's images and mount flags from its seed.
func newModel(seed uint64) *model {
	m := &model{seed: seed, rng: rand.New(rand.NewPCG(seed, 0x6d6f64656c)), up: true}
	m.chunk = []int64{64 << 10, 256 << 10, 1 << 20}[m.rng.IntN(3)]
	names := []string{"a.img", "b.raw", "dir/c.qcow2", "dir/sub/d.iso", "e.img"}
	var total int64
	for _, name := range names {
		im := &modelImage{name: name, completeAt: -1}
		im.versions = append(im.versions, m.newVersion(im))
		total += im.size(0)
		m.images = append(m.images, im)
	}
	// Room for about two thirds of the images: reads press on the limit.
	m.maxSize = max(indexRoom+4<<20, indexRoom+total*2/3)
	m.ttl = []time.Duration{time.Second, 3 * time.Second, 10 * time.Minute}[m.rng.IntN(3)]
	flush := []string{"100ms", "2s"}[m.rng.IntN(2)]
	m.flags = []string{"--chunk-size", strconv.FormatInt(m.chunk>>10, 10) + "K",
		"--max-size", strconv.FormatInt(m.maxSize, 10), "--catalog-ttl", m.ttl.String(), "--flush-interval", flush}
	if m.strict = m.rng.IntN(4) == 0; m.strict {
		m.flags = append(m.flags, "--verify", "strict")
	}
	if m.rng.IntN(3) == 0 {
		m.flags = append(m.flags, "--scrub-interval", "1s") // it must find nothing to drop
	}
	return m
}

// newVersion draws the next version of im: a size (often the last one's,
// at times a multiple of the chunk size, tiny or empty) and bytes seeded
// by the sequence, the name and the version number.
func (m *model) newVersion(im *modelImage) version {
	m.publications++
	mtime := int64(1_600_000_000 + 1000*m.publications)
	if len(im.versions) > 0 && m.rng.IntN(4) == 0 {
		old := im.versions[m.rng.IntN(len(im.versions))] // the same bytes again, or a rollback
		return version{data: old.data, digest: old.digest, mtime: mtime}
	}
	var size int64
	switch r := m.rng.IntN(10); {
	case len(im.versions) > 0 && r >= 5: // the same size: only validators tell
		size = im.size(im.current())
	case r == 0:
		size = m.rng.Int64N(5000) // within a chunk, maybe empty
	case r <= 2:
		size = m.chunk * (1 + m.rng.Int64N(4<<20/m.chunk))
	default:
		size = 1 + m.rng.Int64N(4<<20)
	}
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], m.seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(len(im.versions)))
	copy(seed[16:], im.name)
	data := make([]byte, size)
	rand.NewChaCha8(seed).Read(data)
	sum := sha256.Sum256(data)
	return version{data: data, digest: "sha256:" + hex.EncodeToString(sum[:]), mtime: mtime}
}

// committed is the room pins and held opens may need, with the extra
// images: the largest version of each image that is pinned, open or extra.
func (m *model) committed(extra ...*modelImage) int64 {
	var n int64
	for _, im := range m.images {
		if slices.Contains(extra, im) || im.pinned || slices.ContainsFunc(m.opens, func(o *heldOpen) bool { return o.img == im }) {
			n += im.maxSize() + 2*m.chunk
		}
	}
	return n
}

// fits: the images, whole, fit beside the pinned and open ones (pinning
// or opening one leaves room for the others' reads).
func (m *model) fits(imgs ...*modelImage) bool {
	return m.committed(imgs...) <= m.maxSize-indexRoom-2*m.chunk
}

// modelRuns reads the environment: IMGCACHE_MODEL_SEED replays one
// sequence; IMGCACHE_MODEL_SEQUENCES and IMGCACHE_MODEL_STEPS run more or
// longer ones (defaults: 2 of 12 steps, fresh seeds each run).
func modelRuns(t *testing.T) (seeds []uint64, steps int) {
	num := func(name string, def int) int {
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
	steps = num("IMGCACHE_MODEL_STEPS", 12)
	if v := os.Getenv("IMGCACHE_MODEL_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 0, 64)
		if err != nil {
			t.Fatalf("IMGCACHE_MODEL_SEED=%q: want a number", v)
		}
		return []uint64{seed}, steps
	}
	for range num("IMGCACHE_MODEL_SEQUENCES", 2) {
		seeds = append(seeds, rand.Uint64())
	}
	return seeds, steps
}

// replayCommand is the one line that runs a sequence again.
func replayCommand(seed uint64, steps int) string {
	race := ""
	if raceEnabled {
		race = "-race "
	}
	return fmt.Sprintf("IMGCACHE_MODEL_SEED=%d IMGCACHE_MODEL_STEPS=%d go test %s-count=1 -run '^TestModel$' ./integration/",
		seed, steps, race)
}

// modelTotals are the figures of a run, for docs/failure.md.
type modelTotals struct {
	sequences, steps, reads, mismatches, failedReads int
	bytes                                            int64
	overLimit                                        int64 // the most the cache directory passed --max-size by
	overSequences                                    int   // sequences in which it did
	ops                                              map[string]int
}

// TestModel runs the sequences, one subtest each, and logs the totals.
func TestModel(t *testing.T) {
	need(t, "perl", "getfattr", "stat")
	seeds, steps := modelRuns(t)
	tot := &modelTotals{ops: map[string]int{}}
	start := time.Now()
	for _, seed := range seeds {
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runSequence(t, seed, steps, tot)
		})
		if !ok && len(seeds) > 1 {
			break // one failing seed at a time: its replay line is above
		}
	}
	var kinds []string
	for k, n := range tot.ops {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	slices.Sort(kinds)
	t.Logf("%d sequences, %d steps in %v: %d reads (%.1f MiB) checked, %d failed as allowed, %d wrong; "+
		"the cache directory passed --max-size in %d sequences, by %d bytes at most; operations: %s",
		tot.sequences, tot.steps, time.Since(start).Round(time.Second), tot.reads, float64(tot.bytes)/(1<<20),
		tot.failedReads, tot.mismatches, tot.overSequences, tot.overLimit, strings.Join(kinds, ", "))
}

// runSequence runs one seeded sequence: the steps, each followed by the
// invariants, then a last read of every image. It stops at the first
// step that finds a defect and prints the line that replays it.
func runSequence(t *testing.T, seed uint64, steps int, tot *modelTotals) {
	m := newModel(seed)
	s := startSequence(t, m)
	t.Logf("seed %d: chunk %d, --max-size %d, flags %v", seed, m.chunk, m.maxSize, m.flags)
	defer func() {
		tot.sequences++
		tot.steps += len(s.done)
		tot.reads += s.reads
		tot.bytes += s.readBytes
		tot.failedReads += s.failedReads
		tot.mismatches += s.mismatches
		if s.overLimit > 0 {
			tot.overSequences++
			tot.overLimit = max(tot.overLimit, s.overLimit)
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("steps run:\n%s", strings.Join(s.done, "\n"))
		}
		if t.Failed() {
			t.Logf("replay: %s", replayCommand(seed, steps))
		}
	}()
	for i := range steps {
		o := m.next()
		tot.ops[o.kind.String()]++
		began := time.Now()
		s.run(o)
		ran := time.Since(began)
		if !t.Failed() {
			s.checkInvariants()
		}
		s.done = append(s.done, fmt.Sprintf("%3d %s (%v, checks %v)", i, o,
			ran.Round(time.Millisecond), (time.Since(began)-ran).Round(time.Millisecond)))
		if t.Failed() {
			return
		}
	}
	s.finish()
}
