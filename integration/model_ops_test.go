package integration

// The operations of the model-based test (model_test.go): how the next
// one is chosen from the model, and how it is run against the real mount.

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

type opKind int

const (
	opRead          opKind = iota // a new open reads one range
	opReads                       // several processes read at once, new opens and held ones
	opOpen                        // a process opens an image and keeps it open
	opReadHeld                    // a held open reads a range
	opClose                       // a held open is closed
	opEvict                       // imgcache evict NAME
	opEvictAll                    // imgcache evict --all
	opPin                         // imgcache pin NAME (again: the prefetch is kicked)
	opUnpin                       // imgcache unpin NAME
	opPrefetch                    // imgcache prefetch NAME
	opPrune                       // imgcache prune
	opClean                       // imgcache clean
	opVerify                      // imgcache verify [NAME]
	opStopUpstream                // SIGTERM to imgcache serve
	opStartUpstream               // imgcache serve again, on the same address
	opPublish                     // the upstream publishes a new version of an image
	opKill                        // kill -9 of the daemon, then a new mount of the cache
	opBusy                        // reads, and another operation while they run
	opRestart                     // SIGTERM to the daemon, then a new mount
)

var opNames = [...]string{"read", "reads", "open", "read-held", "close", "evict", "evict-all", "pin", "unpin",
	"prefetch", "prune", "clean", "verify", "stop-upstream", "start-upstream", "publish", "kill", "busy", "restart"}

func (k opKind) String() string { return opNames[k] }

// readSpec is one read: through a held open, or through a new open.
type readSpec struct {
	img    *modelImage
	held   *heldOpen // nil: a process opens the image, reads, exits
	off, n int64
}

func (r readSpec) String() string {
	by := "new open"
	if r.held != nil {
		by = fmt.Sprintf("open#%d", r.held.id)
	}
	return fmt.Sprintf("%s [%d,+%d) by %s", r.img.name, r.off, r.n, by)
}

// op is one step of a sequence.
type op struct {
	kind    opKind
	img     *modelImage
	held    *heldOpen
	reads   []readSpec
	closing []*heldOpen   // opens the step ends (kill, restart)
	during  *op           // busy: the operation that comes while the reads run
	delay   time.Duration // busy: when it comes
}

func (o op) String() string {
	s := o.kind.String()
	switch {
	case o.kind == opPublish:
		v := o.img.current()
		return fmt.Sprintf("%s %s version %d (%d bytes)", s, o.img.name, v, o.img.size(v))
	case o.held != nil && o.kind != opReadHeld:
		return fmt.Sprintf("%s open#%d %s", s, o.held.id, o.img.name)
	case len(o.reads) > 0:
		var rs []string
		for _, r := range o.reads {
			rs = append(rs, r.String())
		}
		if o.during != nil {
			s += fmt.Sprintf(" (%s after %v)", o.during, o.delay.Round(time.Millisecond))
		}
		return s + ": " + strings.Join(rs, "; ")
	case o.img != nil:
		return s + " " + o.img.name
	}
	return s
}

// next chooses the next operation from the model alone and updates the
// model's plan as the operation will (opens, pins, the upstream, versions).
func (m *model) next() op {
	type choice struct {
		kind   opKind
		weight int
	}
	var cs []choice
	add := func(k opKind, w int, ok bool) {
		if ok {
			cs = append(cs, choice{k, w})
		}
	}
	anyPinned := slices.ContainsFunc(m.images, func(im *modelImage) bool { return im.pinned })
	add(opRead, 20, true)
	add(opReads, 8, true)
	fits := func(im *modelImage) bool { return m.fits(im) }
	add(opOpen, 5, len(m.opens) < 3 && slices.ContainsFunc(m.images, fits))
	add(opReadHeld, 15, len(m.opens) > 0)
	add(opClose, 5, len(m.opens) > 0)
	add(opEvict, 4, true)
	add(opEvictAll, 1, true)
	add(opPin, 3, slices.ContainsFunc(m.images, func(im *modelImage) bool { return im.pinned || m.fits(im) }))
	add(opUnpin, 2, anyPinned)
	add(opPrefetch, 2, true)
	add(opPrune, 2, true)
	add(opClean, 1, true)
	add(opVerify, 3, true)
	add(opStopUpstream, 2, m.up)
	add(opStartUpstream, 8, !m.up)
	add(opPublish, 3, true)
	add(opKill, 2, true)
	add(opBusy, 4, true)
	add(opRestart, 1, true)
	total := 0
	for _, c := range cs {
		total += c.weight
	}
	r := m.rng.IntN(total)
	for _, c := range cs {
		if r -= c.weight; r < 0 {
			return m.plan(c.kind)
		}
	}
	panic("unreachable")
}

// plan fills in an operation of kind k and applies it to the model.
func (m *model) plan(k opKind) op {
	o := op{kind: k}
	pick := func(ok func(*modelImage) bool) *modelImage {
		var imgs []*modelImage
		for _, im := range m.images {
			if ok == nil || ok(im) {
				imgs = append(imgs, im)
			}
		}
		return imgs[m.rng.IntN(len(imgs))]
	}
	switch k {
	case opRead:
		o.reads = []readSpec{m.newRead(pick(nil), nil)}
	case opReads, opBusy:
		free := slices.Clone(m.opens)
		for range 2 + m.rng.IntN(3) {
			if len(free) > 0 && m.rng.IntN(2) == 0 {
				h := free[m.rng.IntN(len(free))]
				free = slices.DeleteFunc(free, func(x *heldOpen) bool { return x == h })
				o.reads = append(o.reads, m.newRead(h.img, h))
			} else {
				o.reads = append(o.reads, m.newRead(pick(nil), nil))
			}
		}
		if k == opBusy {
			during := []opKind{opKill, opPublish, opEvictAll, opPrune, opVerify, opEvict}
			if m.up {
				during = append(during, opStopUpstream)
			}
			inner := m.plan(during[m.rng.IntN(len(during))])
			o.during = &inner
			o.delay = time.Duration(m.rng.Int64N(int64(400 * time.Millisecond)))
		}
	case opOpen:
		o.img = pick(func(im *modelImage) bool { return m.fits(im) })
		m.opened++
		o.held = &heldOpen{id: m.opened, img: o.img, size: o.img.size(o.img.current())}
		m.opens = append(m.opens, o.held)
	case opReadHeld:
		o.held = m.opens[m.rng.IntN(len(m.opens))]
		o.reads = []readSpec{m.newRead(o.held.img, o.held)}
	case opClose:
		i := m.rng.IntN(len(m.opens))
		o.held, o.img = m.opens[i], m.opens[i].img
		m.opens = slices.Delete(m.opens, i, i+1)
	case opEvict, opPrefetch, opVerify:
		o.img = pick(nil)
		if k == opVerify && m.rng.IntN(2) == 0 {
			o.img = nil // every image
		}
	case opPin:
		o.img = pick(func(im *modelImage) bool { return im.pinned || m.fits(im) })
		o.img.pinned = true
		o.img.pinDue = m.up && m.fits() // an image pinned before may have grown past what fits
	case opUnpin:
		o.img = pick(func(im *modelImage) bool { return im.pinned })
		o.img.pinned, o.img.pinDue, o.img.completeAt = false, false, -1
	case opStopUpstream:
		m.up = false
		for _, im := range m.images {
			im.pinDue = false // a failed prefetch retries 30 s later
		}
	case opStartUpstream:
		m.up = true
	case opPublish:
		o.img = pick(nil)
		o.img.versions = append(o.img.versions, m.newVersion(o.img))
		o.img.pinDue = false
	case opKill, opRestart:
		o.closing, m.opens = m.opens, nil
		m.restarted(k == opKill)
	}
	return o
}

// restarted: a new daemon rebuilds the prefetch queue at start, so pinned
// images are due if the upstream is up and they fit together (a pin
// follows its name to a larger version, which may not); after a kill -9
// the last chunks fetched may not have been recorded.
func (m *model) restarted(killed bool) {
	fit := m.fits()
	for _, im := range m.images {
		im.pinDue = im.pinned && m.up && fit
		if killed {
			im.completeAt = -1
		}
	}
}

// newRead aims a read at an image of the given size: the whole of it, a
// range across a chunk boundary, the end (and past it), or anywhere.
func (m *model) newRead(im *modelImage, h *heldOpen) readSpec {
	size := im.size(im.current())
	if h != nil {
		size = h.size
	}
	r := readSpec{img: im, held: h}
	if size == 0 {
		r.n = 1 + m.rng.Int64N(4096)
		return r
	}
	switch m.rng.IntN(6) {
	case 0:
		r.off, r.n = 0, size
	case 1:
		boundary := m.chunk * (1 + m.rng.Int64N(max(size/m.chunk, 1)))
		r.off = max(0, boundary-1-m.rng.Int64N(4096))
		r.n = 2 + m.rng.Int64N(m.chunk)
	case 2:
		r.off = max(0, size-1-m.rng.Int64N(min(size, 2*m.chunk)))
		r.n = 1 + m.rng.Int64N(2*m.chunk)
	default:
		r.off = m.rng.Int64N(size)
		r.n = 1 + m.rng.Int64N(min(1<<20, 2*m.chunk))
	}
	return r
}

// run runs an operation against the real mount and checks what it says.
func (s *sequence) run(o op) {
	switch o.kind {
	case opRead, opReads, opReadHeld:
		s.readAll(o.reads)
	case opOpen:
		r, err := openReader(s.mnt.path(o.img.name))
		if err != nil {
			s.t.Errorf("open#%d of %s: %v", o.held.id, o.img.name, err)
			return
		}
		o.held.r = r
		o.held.possible = s.opened(o.img, r)
	case opClose:
		s.closeAll([]*heldOpen{o.held})
	case opEvict:
		s.evict(o.img)
	case opEvictAll:
		s.evictAll()
	case opPin, opUnpin:
		img := s.manageImage(o.kind.String(), o.img.name)
		if img.Pinned != (o.kind == opPin) {
			s.t.Errorf("imgcache %s %s answered pinned=%v", o.kind, o.img.name, img.Pinned)
		}
		if o.kind == opPin {
			if o.img.pinVersion = o.img.versionAt(img.ModTime.Unix()); o.img.pinVersion < 0 {
				s.t.Errorf("imgcache pin %s answered mtime %v: none of the versions published", o.img.name, img.ModTime)
			}
		}
	case opPrefetch:
		if r := s.manage("prefetch", o.img.name); r.code != 0 {
			s.t.Errorf("imgcache prefetch %s: exit %d: %s", o.img.name, r.code, strings.TrimSpace(r.stderr))
		}
	case opPrune:
		s.prune()
	case opClean:
		s.clean()
	case opVerify:
		s.verify(o.img)
	case opStopUpstream:
		s.stopUpstream()
	case opStartUpstream:
		s.startUpstream()
	case opPublish:
		s.publish(o.img)
	case opKill:
		s.kill()
		s.closeAll(o.closing)
		s.remount()
	case opBusy:
		killed := o.during.kind == opKill
		check := s.startReads(o.reads, killed)
		time.Sleep(o.delay)
		if killed { // the reads end before their readers are closed
			s.kill()
			check()
			s.closeAll(o.during.closing)
			s.remount()
			return
		}
		s.run(*o.during)
		check()
	case opRestart:
		s.mnt.unmount(s.t) // exit 0, nothing left mounted, held opens or not
		s.closeAll(o.closing)
		s.remount()
	}
}

// readAll runs the reads at once, each from its own process, and checks
// every byte against the model.
func (s *sequence) readAll(reads []readSpec) { s.startReads(reads, false)() }

// startReads starts the reads, each from its own process; check waits for
// them and checks every byte against the model (in the caller's goroutine:
// the model is not shared). killed: the daemon is killed meanwhile.
func (s *sequence) startReads(reads []readSpec, killed bool) (check func()) {
	res := make([]readResult, len(reads))
	floors := make([]int, len(reads)) // reads at once are in no order
	var wg sync.WaitGroup
	for i, rd := range reads {
		floors[i] = rd.img.floor
		r := &res[i]
		r.possible, r.mtime = rd.img.newOpenVersions(), -1
		if rd.held != nil {
			r.possible = rd.held.possible
		}
		wg.Add(1)
		go func() { // the processes only: the model stays in this goroutine
			defer wg.Done()
			if rd.held != nil {
				r.got, r.failure, r.err = rd.held.r.read(rd.off, rd.n)
				return
			}
			h, err := openReader(s.mnt.path(rd.img.name))
			if err != nil {
				r.failure = err.Error()
				return
			}
			r.mtime = h.mtime
			r.got, r.failure, r.err = h.read(rd.off, rd.n)
			h.close()
		}()
	}
	return func() {
		wg.Wait()
		s.checkReads(reads, res, floors, killed)
	}
}
