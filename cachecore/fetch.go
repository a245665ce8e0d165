package cachecore

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Fetching. A reader that needs chunks which are not present claims the
// ones nobody is fetching yet (a flight per chunk, created under img.mu, so
// that every chunk has at most one fetch: the single flight) and waits for
// all of them. Claimed chunks are fetched in contiguous runs, one range
// request per run, on the cache's context: a reader that is interrupted
// stops waiting, but the fetch goes on for the others. Each chunk is
// written to the data file before it is marked present, and its waiters
// are released as soon as it lands, so a reader of the start of a long run
// need not wait for its end.
// (Not x/sync/singleflight: it merges calls for one key, and a read needs a
// range of chunks, some claimed by others, its own merged into runs.)

// maxRunChunks bounds one range request, so that one reader cannot hold a
// fetch slot for long and read-ahead spreads over parallel requests. Not
// smaller: a registry (distribution) spends about as much CPU on each
// range request as on several MiB of its body (it reads each through a
// buffer of 4 MiB of its own); runs of 32 chunks rather than 8 cost it a
// quarter less CPU for a cold read of 512 MiB.
const maxRunChunks = 32

// pieceSize is how much of a chunk one write moves; buffers of this size
// are pooled, so memory is bounded by the number of fetch slots.
const pieceSize = 1 << 20

var piecePool = newFreeList(DefaultMaxFetches+3, pieceSize) // freelist.go

// run is a contiguous range of chunks [first, end) claimed by one fetch,
// or, if stream is set, the image's stream (stream.go).
type run struct {
	first, end int
	flights    []*flight
	req        *request
	then       func()  // if set, called when the run ends and its slot is free
	stream     *stream // set when the run is (or became) the image's stream
	err        error   // why the run failed, once it is over
}

// ensure makes chunks [first, last] present, fetching what is missing. It
// returns when they are all present, when a fetch of one of them fails,
// or when ctx is done (the fetches go on, unless nobody else waits: see
// request.go).
func (img *Image) ensure(ctx context.Context, first, last int) error {
	return img.ensureAhead(ctx, first, last, last+1)
}

// ensureAhead is ensure that also claims the missing, unclaimed chunks of
// [last+1, claimTo) into the reader's runs, without waiting for them: a
// sequential reader's next chunks, which the kernel is about to ask for
// one READ at a time. One range request of a run costs less than one per
// chunk (a registry looks each one up in its storage), and the chunks
// still land one by one, so the reader waits only for its own.
func (img *Image) ensureAhead(ctx context.Context, first, last, claimTo int) error {
	counted := false
	for {
		again, err := img.ensureOnce(ctx, first, last, claimTo, &counted)
		if !again {
			return err
		}
	}
}

// ensureOnce is one try of ensure; again says that a run it waited for
// was abandoned just as it joined, so it should claim afresh.
func (img *Image) ensureOnce(ctx context.Context, first, last, claimTo int, counted *bool) (again bool, err error) {
	img.mu.Lock()
	if img.present.NextMissing(first, last+1) > last {
		img.mu.Unlock()
		if !*counted {
			img.c.stats.Hits.Add(1)
		}
		return false, nil
	}
	if !*counted {
		img.c.stats.Misses.Add(1)
		*counted = true
	}
	var waits []*flight
	runs := img.claimLocked(first, last+1, &waits, -1)
	if claimTo > last+1 {
		runs = img.extendLocked(runs, last+1, claimTo)
	}
	if len(runs) > 0 {
		img.users += len(runs) // each run keeps the data file open
	}
	file := img.file
	joined := joinAll(waits)
	img.mu.Unlock()
	defer leaveAll(joined)

	for i := range runs {
		img.c.wg.Add(1)
		go img.c.fetchRun(img, file, &runs[i], true)
	}
	for _, f := range waits {
		select {
		case <-f.done:
			if errors.Is(f.err, errAbandoned) && ctx.Err() == nil {
				return true, nil
			}
			if f.err != nil {
				return false, f.err
			}
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return false, nil
}

// claimLocked creates flights for the missing, unclaimed chunks of
// [from, to) and returns them grouped in at most maxRuns runs (no limit if
// negative); waits (if not nil) gets every flight a reader of [from, to)
// must wait for, old and new.
func (img *Image) claimLocked(from, to int, waits *[]*flight, maxRuns int) []run {
	var runs []run
	var cur *run
	for i := img.present.NextMissing(from, to); i < to; i = img.present.NextMissing(i+1, to) {
		f, ok := img.flights[i]
		if !ok && img.stream == nil && img.c.noRanges.Load() && len(runs) != maxRuns {
			runs = append(runs, img.newStreamLocked(i)) // stream.go
		}
		if s := img.stream; !ok && s != nil && i >= s.pos { // the stream brings it
			f, ok = s.claimLocked(img, i), true
		}
		if ok {
			if waits != nil {
				*waits = append(*waits, f)
			}
			cur = nil
			continue
		}
		if cur == nil || cur.end != i || cur.end-cur.first >= maxRunChunks {
			if len(runs) == maxRuns {
				break
			}
			runs = append(runs, run{first: i, end: i, req: img.c.newRequest(waits == nil)})
			cur = &runs[len(runs)-1]
		}
		f = &flight{done: make(chan struct{}), req: cur.req}
		img.flights[i] = f
		if waits != nil {
			*waits = append(*waits, f)
		}
		cur.end++
		cur.flights = append(cur.flights, f)
	}
	return runs
}

// extendLocked adds the missing, unclaimed chunks of [from, to) that
// directly follow the last of runs to it, as far as a run may grow (and
// no further than the first chunk that is present or claimed): the
// reader's own request brings them. Nobody waits for them yet.
func (img *Image) extendLocked(runs []run, from, to int) []run {
	if len(runs) == 0 || img.stream != nil {
		return runs
	}
	r := &runs[len(runs)-1]
	if r.end != from || r.stream != nil {
		return runs
	}
	for i := from; i < to && r.end-r.first < maxRunChunks; i++ {
		if _, claimed := img.flights[i]; claimed || img.present.Has(i) {
			break
		}
		f := &flight{done: make(chan struct{}), req: r.req}
		img.flights[i] = f
		r.flights = append(r.flights, f)
		r.end++
	}
	return runs
}

// readAhead starts fetches of the missing, unclaimed chunks of [from, to)
// as far as free fetch slots allow; it never waits, so a reader's own
// chunks always come first. It returns how far it got: every chunk below
// is present or on its way. then, if set, runs when each run it started
// ends (to start more as slots free up).
func (c *Cache) readAhead(img *Image, from, to int, then func()) int {
	for from < to {
		if !c.slots.tryAcquire(img, 0) {
			return from
		}
		img.mu.Lock()
		runs := img.claimLocked(from, to, nil, 1)
		if len(runs) > 0 {
			img.users++
		}
		file := img.file
		img.mu.Unlock()
		if len(runs) == 0 {
			c.slots.release(img)
			return to
		}
		r := &runs[0]
		r.then = then
		c.wg.Add(1)
		go c.fetchRun(img, file, r, false)
		if r.stream != nil {
			return to // it brings everything
		}
		from = r.end
	}
	return to
}

// fetchRun fetches the chunks of r into file and lands them one by one.
// If the reply ends early after some progress it asks again for the rest;
// whatever cannot be fetched fails its flights with the error, which is
// also recorded on the image. A foreground run waits for its fetch slot
// here; a background one (read-ahead, prefetch) comes holding one. The
// slot is given back during the pauses between retries.
func (c *Cache) fetchRun(img *Image, file fileWriterAt, r *run, foreground bool) {
	defer c.wg.Done()
	if r.then != nil {
		defer r.then()
	}
	defer img.release()
	defer r.req.end()
	defer r.awaitFlights() // stream.go
	// The slot and a piece buffer are held together, so that buffers in
	// use are bounded by the slots.
	var bufp *[]byte
	hold := func() { bufp = piecePool.Get().(*[]byte) }
	unhold := func() {
		piecePool.Put(bufp)
		bufp = nil
		c.slots.release(img)
	}
	if !foreground {
		hold()
	}
	defer func() {
		if bufp != nil {
			unhold()
		}
	}()
	next := r.first
	for attempt := 0; !r.doneLocking(img, next); {
		if bufp == nil {
			if err := c.slots.acquire(r.req.ctx, img); err != nil {
				img.failRun(r, next, c.stopCause(r.req))
				return
			}
			hold()
		}
		c.stats.FetchesInFlight.Add(1)
		landed, err := c.fetchRange(r.req.ctx, img, file, r, next, *bufp)
		c.stats.FetchesInFlight.Add(-1)
		next += landed
		if err == nil {
			continue
		}
		if landed > 0 {
			attempt = 0 // progress: retries count from here
			if errors.Is(err, upstream.ErrShortBody) {
				continue // ask again for the rest
			}
		}
		if r.req.ctx.Err() != nil { // closing, or nobody waits: not the image's fault
			img.failRun(r, next, c.stopCause(r.req))
			return
		}
		if readsAround(err) { // no room, or a full disk: readers read around the cache
			img.failRun(r, next, err)
			return
		}
		attempt++
		if c.retryWorthy(attempt, err) {
			unhold()
			if c.pauseBeforeRetry(r.req.ctx, img, attempt, err) {
				continue
			}
			img.failRun(r, next, c.stopCause(r.req))
			return
		}
		if errors.Is(err, upstream.ErrChanged) {
			c.refreshSoon()
		}
		c.stats.FetchErrors.Add(1)
		err = &Error{Op: "fetch", Name: img.entry.Name, Err: err}
		c.log.Warn("fetch failed", "image", img.entry.Name, "err", err)
		img.failRun(r, next, err)
		return
	}
}

// stopCause is why a run's context ended: the cache closing, or no
// reader waiting any more.
func (c *Cache) stopCause(q *request) error {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	if err := context.Cause(q.ctx); err != nil {
		return err
	}
	return ErrClosed
}

type fileWriterAt interface {
	WriteAt(p []byte, off int64) (int, error)
}

// fetchRange makes one range request for chunks [from, r.end) and lands
// them in order; it returns how many it landed. A reply of the whole image
// (a server that ignores Range) is read whole instead (stream.go); so is
// every request of a run that is the image's stream.
func (c *Cache) fetchRange(ctx context.Context, img *Image, file fileWriterAt, r *run, from int, buf []byte) (landed int, err error) {
	if r.stream != nil {
		return c.fetchStream(ctx, img, file, r, buf)
	}
	room := &room{c: c, img: img, file: file} // the size limit (usage.go)
	defer room.giveBack()
	if err := room.take(from); err != nil {
		return 0, err
	}
	off := int64(from) * img.chunkSize
	n := min(int64(r.end)*img.chunkSize, img.entry.Size) - off
	if err := c.storageLost(); err != nil { // nothing is stored any more (storage.go)
		return 0, err
	}
	releaseSpace, err := c.free.Claim(n) // a full disk
	if err != nil {
		return 0, err
	}
	defer releaseSpace()
	learned, err := c.probeTurn(ctx, img) // stream.go
	if err != nil {
		return 0, err
	}
	if img.handOver(r, from) { // the image's stream will bring them: asking would resend the image
		learned(false)
		return r.end - from, nil
	}
	rep, err := c.openReply(ctx, img, off, n)
	if err != nil {
		learned(false)
		return 0, err
	}
	defer func() { err = rep.close(err) }()
	whole := upstream.ReadWhole(rep.body)
	c.noteReply(whole, off) // stream.go
	learned(true)
	check := img.refetchCheck() // nil unless the image was verified before
	if whole {
		room.giveBack()
		return c.takeWhole(img, file, r, from, rep, room, buf, check) // stream.go
	}
	return c.readRun(img, r, from, rep, room, buf, check)
}

// readRun reads chunks [from, r.end) of run r from in and lands them,
// reading past those the image's stream took meanwhile. It returns how
// many it is done with. room holds what the size limit lets it write.
func (c *Cache) readRun(img *Image, r *run, from int, in *reply, room *room, buf []byte, check *chunkCheck) (done int, err error) {
	for i := from; i < r.end; i++ {
		f := r.flights[i-r.first]
		if !img.take(r, i, f) { // the image's stream brings it (stream.go)
			room.giveBack()
			if err := c.discard(in, img.chunkLen(i)); err != nil {
				return done, err
			}
			done++
			continue
		}
		if room.held == 0 {
			if err := room.take(i); err != nil {
				img.untake(f)
				return done, err
			}
		}
		if err := c.writeChunk(img, room, in, i, buf, check); err != nil {
			img.untake(f)
			return done, err
		}
		img.land(i, f)
		done++
	}
	return done, nil
}

// take makes r the writer of chunk i (its flight f), unless the flight is
// no longer r's: another run (the image's stream) took it.
func (img *Image) take(r *run, i int, f *flight) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.flights[i] != f || f.req != r.req || f.taken {
		return false
	}
	f.taken = true
	return true
}

// untake gives back a chunk whose write failed: its flight fails with the
// run, or another run may take it.
func (img *Image) untake(f *flight) {
	img.mu.Lock()
	f.taken = false
	img.mu.Unlock()
}

// writeChunk reads chunk i from in and writes it to the data file within
// room, checking it against its verified sum if check is set. A reply
// that can be spliced (a plain-HTTP one) goes from the connection into
// the file without passing through the process, unless the chunk must be
// checked on its way (a refetch of a verified image).
func (c *Cache) writeChunk(img *Image, room *room, in *reply, i int, buf []byte, check *chunkCheck) error {
	chunkOff, left := int64(i)*img.chunkSize, img.chunkLen(i)
	if f, ok := room.file.(*os.File); ok && in.sp != nil && check == nil {
		room.written = true
		var werr error
		write := func(do func() error) error {
			err := img.writes.around(f, do) // hashing.go
			if err != nil && werr == nil {
				werr = err
			}
			return err
		}
		k, err := in.spliceTo(f, chunkOff, left, write)
		c.stats.BytesFetched.Add(uint64(k))
		switch {
		case werr != nil:
			return &Error{Op: "write cache", Name: img.entry.Name, Err: werr}
		case err != nil:
			return err
		}
		room.wrote()
		return nil
	}
	for left > 0 {
		k := min(left, int64(len(buf)))
		got, err := io.ReadFull(in, buf[:k])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = upstream.ErrShortBody
			}
			c.stats.BytesFetched.Add(uint64(got))
			return err
		}
		if _, err := room.WriteAt(buf[:k], chunkOff); err != nil {
			return &Error{Op: "write cache", Name: img.entry.Name, Err: err}
		}
		check.write(buf[:k])
		c.stats.BytesFetched.Add(uint64(k))
		chunkOff += k
		left -= k
	}
	room.wrote()
	return check.chunkDone(i)
}

// land marks chunk i present and wakes the waiters of f, its flight.
func (img *Image) land(i int, f *flight) {
	img.mu.Lock()
	img.present.Set(i)
	img.dirty, img.unsynced = true, true
	img.hashSoonLocked() // hashing.go
	delete(img.flights, i)
	complete := img.present.Complete()
	if complete {
		img.rec.LastError, img.rec.LastErrorAt = "", time.Time{}
	}
	img.mu.Unlock()
	close(f.done)
	if complete {
		img.c.imageCompleted(img)
	}
}

// failRun fails what is left of r (from chunk next on, or its stream).
func (img *Image) failRun(r *run, next int, err error) {
	r.err = err
	if r.stream != nil {
		img.endStream(r.stream, err) // stream.go
		return
	}
	img.failFrom(r, next, err)
}

// failFrom fails the flights of r from chunk i on.
func (img *Image) failFrom(r *run, i int, err error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNoRoom) && !errors.Is(err, errAbandoned) {
		img.recordErrorLocked(err)
	}
	for ; i < r.end; i++ {
		f := r.flights[i-r.first]
		if img.flights[i] != f || f.req != r.req { // the image's stream has it (stream.go)
			continue
		}
		delete(img.flights, i)
		f.err = err
		close(f.done)
	}
}

// readsAround says whether a fetch failed for want of space, so that its
// readers are answered straight from the upstream instead (readDirect).
func readsAround(err error) bool {
	return errors.Is(err, ErrNoRoom) || errors.Is(err, ErrNoSpace) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, ErrStorageLost)
}

// readDirect reads [off, off+n) of img straight from the upstream into
// memory, storing nothing: the way out when a chunk cannot be stored
// (ErrNoRoom, or a full disk). It takes a fetch slot like any fetch.
func (c *Cache) readDirect(ctx context.Context, img *Image, off int64, n int) (Span, error) {
	if err := c.slots.acquire(ctx, img); err != nil {
		return Span{}, err
	}
	defer c.slots.release(img)
	body, err := c.up.Fetch(ctx, img.fetchEntry(), off, int64(n))
	if err != nil {
		c.stats.FetchErrors.Add(1)
		return Span{}, &Error{Op: "fetch", Name: img.entry.Name, Err: err}
	}
	defer body.Close()
	buf := make([]byte, n)
	got, err := io.ReadFull(body, buf)
	c.stats.BytesFetched.Add(uint64(got))
	if err != nil {
		c.stats.FetchErrors.Add(1)
		return Span{}, &Error{Op: "fetch", Name: img.entry.Name, Err: err}
	}
	c.stats.DirectReads.Add(1)
	c.stats.BytesServed.Add(uint64(n))
	return Span{Off: off, Len: n, Data: buf}, nil
}
