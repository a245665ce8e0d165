package cachecore

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Servers that ignore Range. python3 -m http.server (and some appliances,
// object-store gateways, a pull-through registry for a cold blob) answers
// a range request with 200 and the whole image. Asking again for every
// run would make it send the image's start once per run: quadratic bytes.
// So a whole reply is read whole (upstream.WholeReader), once, and every
// chunk it carries is stored, whatever the reader asked for: the run that
// received it becomes the image's stream. While an image has a stream, a
// reader of any chunk the stream has not passed yet waits for the stream
// (claimLocked gives the chunk a flight of the stream's) rather than
// asking the server, which would send the whole image again; runs whose
// whole replies come in while the stream has not reached their chunks
// hand their flights to it and close their replies. Chunks that another
// run is bringing, or that are present, are read past.
//
// The cache remembers that its upstream ignores Range (noRanges), so
// that the next image starts as a stream at once: its first fetch asks
// for everything from the first missing chunk to the end, and a reader
// elsewhere in the image waits for the stream. A reply that is a range
// after all (a server that honours Range for this image) ends the stream
// once no chunk it is asked for is left, and the next fetches are runs
// again.
//
// A whole stream runs to the end of the image (never abandoned): the
// server sends the bytes anyway, and storing them is what spares a second
// whole reply later. It stops early only on failure, whose flights then
// fail (and the run's retries ask again from where it stopped).

// stream is an image's stream, under img.mu.
type stream struct {
	req        *request // its flights' request (never abandoned)
	pos        int      // the stream will pass every chunk from pos on
	next       int      // its next request starts at this chunk
	claimedEnd int      // its flights lie below this
	whole      bool     // its reply is the whole image: it claims what it passes
	ended      bool
}

// newStreamLocked makes the image's stream, starting at chunk i, for an
// upstream known to ignore Range.
func (img *Image) newStreamLocked(i int) run {
	s := &stream{req: img.c.newRequest(true), next: i} // pos 0: expecting a whole reply
	img.stream = s
	return run{first: i, end: i, req: s.req, stream: s}
}

// claimLocked gives chunk i (missing, with no flight) a flight of the
// stream.
func (s *stream) claimLocked(img *Image, i int) *flight {
	f := &flight{done: make(chan struct{}), req: s.req}
	img.flights[i] = f
	s.claimedEnd = max(s.claimedEnd, i+1)
	return f
}

// endLocked ends the stream: new claims make runs again.
func (s *stream) endLocked(img *Image) {
	s.ended = true
	if img.stream == s {
		img.stream = nil
	}
}

// noteReply learns from a reply whether the upstream ignores Range: a
// whole reply says it does, a range reply from past the image's start
// that it does not.
func (c *Cache) noteReply(whole bool, off int64) {
	switch {
	case whole && !c.noRanges.Swap(true):
		c.log.Info("the upstream ignores Range: each image is read whole, once, and every chunk of it kept", "upstream", c.up.URL(""))
	case !whole && off > 0 && c.noRanges.Swap(false):
		c.log.Info("the upstream answers ranges again", "upstream", c.up.URL(""))
	}
}

// probeTurn makes the requests of an image wait, until a first reply has
// said whether the upstream honours Range, for the one request of the
// image that is asking (at most probeWait): its reply decides whether the
// others are runs of their own or go to the image's stream, before they
// ask (each whole reply a server began to send costs what it put in the
// socket's buffers, a few MiB). Once told, requests never wait here.
// learned is called when the request's reply (its headers) is in, or it
// failed (false: the next one asks).
func (c *Cache) probeTurn(ctx context.Context, img *Image) (learned func(bool), err error) {
	noop := func(bool) {}
	timer := time.NewTimer(probeWait)
	defer timer.Stop()
	for !c.probed.Load() {
		img.mu.Lock()
		turn := img.probing
		if turn == nil {
			turn = make(chan struct{})
			img.probing = turn
			img.mu.Unlock()
			return func(ok bool) {
				if ok {
					c.probed.Store(true)
				}
				img.mu.Lock()
				img.probing = nil
				img.mu.Unlock()
				close(turn)
			}, nil
		}
		img.mu.Unlock()
		select {
		case <-turn:
		case <-timer.C:
			return noop, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return noop, nil
}

// probeWait bounds the wait for another request's reply in probeTurn: a
// server slow to answer must not hold every reader of the image up.
const probeWait = time.Second

// handOver says whether plain run r need not read its chunks from
// `from` on: the image's stream took them all, or, if it is whole (or
// expected to be) and has not passed them, it is given those it has not.
func (img *Image) handOver(r *run, from int) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	left := from
	for left < r.end && !img.mineLocked(r, left) {
		left++
	}
	if left == r.end {
		return true
	}
	s := img.stream
	if s == nil || !s.whole && !img.c.noRanges.Load() || s.pos > left {
		return false
	}
	for i := left; i < r.end; i++ {
		if img.mineLocked(r, i) {
			img.flights[i].req = s.req
		}
	}
	s.claimedEnd = max(s.claimedEnd, r.end)
	return true
}

// doneLocking says whether r has nothing left to fetch: its chunks from
// next on, or, for a stream, whether it has ended.
func (r *run) doneLocking(img *Image, next int) bool {
	if r.stream == nil {
		return next >= r.end
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	return r.stream.ended
}

// awaitFlights waits until every flight of r has landed or failed: some
// may have gone to the image's stream, which brings them. A run is over
// only when its flights are (prefetch reads their errors).
func (r *run) awaitFlights() {
	for _, f := range r.flights {
		<-f.done
	}
}

// failed is the error of the first flight of r that failed, or of its
// stream; nil if none did. The run must be over.
func (r *run) failed() error {
	if r.err != nil {
		return r.err
	}
	for _, f := range r.flights {
		if f.err != nil {
			return f.err
		}
	}
	return nil
}

// takeWhole reads a whole reply (in, at the image's byte 0) that plain run
// r received while fetching its chunks from `from` on: r becomes the
// image's stream; or, if there is one, r hands it the chunks it has left
// (if the stream has not passed them) and closes the reply; or else r
// takes them from the reply itself.
func (c *Cache) takeWhole(img *Image, file fileWriterAt, r *run, from int, in *reply, room *room, buf []byte, check *chunkCheck) (int, error) {
	if img.handOver(r, from) {
		return r.end - from, nil
	}
	img.mu.Lock()
	if img.stream == nil {
		s := &stream{req: r.req, claimedEnd: r.end, whole: true}
		img.stream, r.stream = s, s
		r.req.keep()
		img.mu.Unlock()
		return c.readStream(img, file, s, in, 0, buf, check)
	}
	img.mu.Unlock()
	img.mu.Lock()
	left := from // r's first chunk not taken by the stream
	for left < r.end && !img.mineLocked(r, left) {
		left++
	}
	img.mu.Unlock()
	if err := c.discard(in, int64(left)*img.chunkSize); err != nil {
		return 0, err
	}
	done, err := c.readRun(img, r, left, in, room, buf, check)
	return left - from + done, err
}

// mineLocked says whether chunk i's flight is still r's to write.
func (img *Image) mineLocked(r *run, i int) bool {
	f := r.flights[i-r.first]
	return img.flights[i] == f && f.req == r.req && !f.taken
}

// fetchStream makes one request for the stream of run r, from the first
// chunk it has not passed to the end of the image, and reads the reply:
// the whole image if the server ignores Range.
func (c *Cache) fetchStream(ctx context.Context, img *Image, file fileWriterAt, r *run, buf []byte) (decided int, err error) {
	s := r.stream
	img.mu.Lock()
	from := s.next
	img.mu.Unlock()
	if err := c.storageLost(); err != nil { // nothing is stored any more (storage.go)
		return 0, err
	}
	off := int64(from) * img.chunkSize
	learned, err := c.probeTurn(ctx, img)
	if err != nil {
		return 0, err
	}
	rep, err := c.openReply(ctx, img, off, img.entry.Size-off)
	if err != nil {
		learned(false)
		return 0, err
	}
	defer func() { err = rep.close(err) }()
	whole := upstream.ReadWhole(rep.body)
	c.noteReply(whole, off)
	learned(true)
	at := from
	img.mu.Lock()
	if whole {
		s.whole, s.pos, at = true, 0, 0
	} else {
		s.pos = from
		img.releaseBelowLocked(s, from) // the reply will not pass them
	}
	img.mu.Unlock()
	return c.readStream(img, file, s, rep, at, buf, img.refetchCheck())
}

// readStream reads the stream's reply, which is at chunk `at`, to its end
// or, unless the reply is whole, to the last chunk claimed: it lands the
// chunks the stream has flights for (and, in a whole reply, claims and
// lands every missing chunk nobody brings) and reads past the others. It
// returns how many chunks it passed.
func (c *Cache) readStream(img *Image, file fileWriterAt, s *stream, in *reply, at int, buf []byte, check *chunkCheck) (passed int, err error) {
	for i := at; i < img.nChunks; i++ {
		img.mu.Lock()
		f, stop := img.streamStepLocked(s, i)
		img.mu.Unlock()
		if stop {
			img.endStream(s, errAbandoned)
			return passed, nil
		}
		if f == nil {
			err = c.discard(in, img.chunkLen(i))
		} else {
			err = c.writeChunkInRoom(img, file, in, i, buf, check)
		}
		if err != nil {
			if f != nil {
				img.untake(f)
			}
			return passed, err
		}
		if f != nil {
			img.land(i, f)
		}
		img.mu.Lock()
		s.pos, s.next = max(s.pos, i+1), i+1
		img.mu.Unlock()
		passed++
	}
	img.endStream(s, errAbandoned) // a flight it did not pass is asked for again
	return passed, nil
}

// streamStepLocked decides what the stream does with chunk i: land it
// (f, taken), read past it (nil), or stop. A chunk another run is to bring
// but has not begun to write, the stream takes: it has the bytes in hand.
func (img *Image) streamStepLocked(s *stream, i int) (f *flight, stop bool) {
	if s.ended {
		return nil, true
	}
	if !s.whole && i >= s.claimedEnd { // nothing more is asked of a range reply
		return nil, true
	}
	s.pos = max(s.pos, i)
	f = img.flights[i]
	switch {
	case f != nil && !f.taken:
		f.req, f.taken = s.req, true
		s.claimedEnd = max(s.claimedEnd, i+1)
		return f, false
	case f != nil || img.present.Has(i) || !s.whole:
		return nil, false // being written by another run, or here
	default:
		f = s.claimLocked(img, i)
		f.taken = true
		return f, false
	}
}

// endStream ends a stream that failed with err: its flights fail.
func (img *Image) endStream(s *stream, err error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	s.endLocked(img)
	if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNoRoom) && !errors.Is(err, errAbandoned) {
		img.recordErrorLocked(err)
	}
	for i := 0; i < s.claimedEnd; i++ {
		if f := img.flights[i]; f != nil && f.req == s.req {
			delete(img.flights, i)
			f.err = err
			close(f.done)
		}
	}
}

// releaseBelowLocked fails the stream's flights of chunks below end that
// are not being written with errAbandoned: their readers ask again.
func (img *Image) releaseBelowLocked(s *stream, end int) {
	for i := 0; i < min(end, s.claimedEnd); i++ {
		if f := img.flights[i]; f != nil && f.req == s.req && !f.taken {
			delete(img.flights, i)
			f.err = errAbandoned
			close(f.done)
		}
	}
}

// writeChunkInRoom writes chunk i from in, taking room and disk space for
// it alone.
func (c *Cache) writeChunkInRoom(img *Image, file fileWriterAt, in *reply, i int, buf []byte, check *chunkCheck) error {
	room := &room{c: c, img: img, file: file}
	defer room.giveBack()
	if err := room.take(i); err != nil {
		return err
	}
	releaseSpace, err := c.free.Claim(img.chunkLen(i))
	if err != nil {
		return err
	}
	defer releaseSpace()
	return c.writeChunk(img, room, in, i, buf, check)
}

// discard reads past n bytes of a reply.
func (c *Cache) discard(in io.Reader, n int64) error {
	k, err := io.CopyN(io.Discard, in, n)
	c.stats.BytesFetched.Add(uint64(k))
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = upstream.ErrShortBody
	}
	return err
}
