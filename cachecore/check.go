package cachecore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imgcache/imgcache/cachecore/index"
)

// Checking data at rest. Once an image has been hashed (verify.go), the
// sha256 of each of its chunks is in the index. Check reads the chunks
// that are present again and compares: a chunk that no longer matches
// (a disk error, a stray write into the cache directory) is dropped
// (quarantined: its bytes are punched out and it is marked missing, so
// the next read fetches it again), and the image's error says so. A
// complete image that was never hashed (the daemon stopped first) is
// verified whole instead.

// CheckResult is what Check found.
type CheckResult struct {
	Images    int           `json:"images"`     // images checked
	Chunks    int           `json:"chunks"`     // chunks read and compared
	Bytes     int64         `json:"bytes"`      // bytes read
	BadChunks int           `json:"bad_chunks"` // chunks that no longer matched, now dropped
	Invalid   int           `json:"invalid"`    // images whose bytes did not hash to their digest
	Reports   []ImageReport `json:"reports"`    // one per image checked, in name order
}

// ImageReport is what Check found in one image.
type ImageReport struct {
	Name      string `json:"name"`
	State     State  `json:"state"`      // after the check
	Chunks    int    `json:"chunks"`     // chunks read and compared
	BadChunks int    `json:"bad_chunks"` // of those, dropped for not matching
	Message   string `json:"message"`    // the finding, for people
}

// OK reports whether nothing was found wrong.
func (r CheckResult) OK() bool { return r.BadChunks == 0 && r.Invalid == 0 }

// Check checks the cached data of the image or directory called name
// (every image if name is empty) against the checksums recorded when
// each image was verified, and drops what no longer matches. It returns
// early, with what it found so far, if ctx ends.
func (c *Cache) Check(ctx context.Context, name string) (CheckResult, error) {
	imgs, cold, err := c.imagesBelow(name)
	if err != nil {
		return CheckResult{}, err
	}
	k := newChecker(0)
	k.reports = true
	res, err := c.checkAll(ctx, imgs, k)
	if len(cold) > 0 { // reported as checkImage reports an image with nothing cached
		res.Images += len(cold)
		reports := make([]ImageReport, 0, len(res.Reports)+len(cold))
		for _, name := range cold {
			for len(res.Reports) > 0 && res.Reports[0].Name < name {
				reports, res.Reports = append(reports, res.Reports[0]), res.Reports[1:]
			}
			reports = append(reports, ImageReport{Name: name, State: StateAbsent, Message: "nothing cached"})
		}
		res.Reports = append(reports, res.Reports...)
	}
	return res, err
}

// checkAll checks imgs in turn.
func (c *Cache) checkAll(ctx context.Context, imgs []*Image, k *checker) (CheckResult, error) {
	var res CheckResult
	for _, img := range imgs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		r := c.checkImage(ctx, img, k)
		res.Images++
		res.Chunks += r.Chunks
		res.BadChunks += r.BadChunks
		res.Bytes += r.bytes
		if r.State == StateInvalid {
			res.Invalid++
		}
		if k.reports {
			res.Reports = append(res.Reports, r.ImageReport)
		}
	}
	return res, ctx.Err()
}

// imagesBelow returns the image called name, or the images in the
// directory called name ("": all), in name order; with cold images
// (nothing cached: nothing to check, cold.go) the names of those in a
// directory apart, also in order.
func (c *Cache) imagesBelow(name string) (imgs []*Image, cold []string, err error) {
	name = strings.Trim(name, "/")
	t := c.tree.Load()
	if ch, ok := t.file(name); ok {
		c.mu.Lock()
		img := c.imageOfLocked(ch)
		c.mu.Unlock()
		if img == nil {
			return nil, nil, &Error{Op: "check", Name: name, Err: ErrNotFound}
		}
		return []*Image{img}, nil, nil
	}
	if t.dirs[name] == nil {
		return nil, nil, &Error{Op: "check", Name: name, Err: ErrNotFound}
	}
	var walk func(dir string)
	walk = func(dir string) {
		for i := range t.dirs[dir].children {
			ch := &t.dirs[dir].children[i]
			switch p := joinPath(dir, ch.name); {
			case ch.isDir():
				walk(p)
			case ch.img != nil:
				imgs = append(imgs, ch.img)
			default:
				c.mu.Lock()
				img := c.imageOfKeyLocked(&ch.cold.id) // made hot since
				c.mu.Unlock()
				if img != nil {
					imgs = append(imgs, img)
				} else {
					cold = append(cold, p)
				}
			}
		}
	}
	walk(name)
	slices.SortFunc(imgs, func(a, b *Image) int { return strings.Compare(a.entry.Name, b.entry.Name) })
	slices.Sort(cold)
	return imgs, cold, nil
}

type imageCheck struct {
	ImageReport
	bytes     int64
	repairErr error // chunks dropped but left in place could not be fetched again (rest.go)
}

// checkImage compares each present chunk of img with its recorded sum
// and drops those that differ (or cannot be read). A complete image all
// of whose chunks match is marked checked since the mount (rest.go).
func (c *Cache) checkImage(ctx context.Context, img *Image, k *checker) (r imageCheck) {
	r.Name = img.entry.Name
	defer func() { r.State = img.Info().State }()
	img.mu.Lock()
	count, complete := img.present.Count(), img.present.Complete()
	img.mu.Unlock()
	switch {
	case img.nChunks == 0:
		r.Message = "empty image"
		return r
	case count == 0:
		r.Message = "nothing cached"
		return r
	}
	img.awaitSums(ctx) // a verified image's, made after its verdict (sums_after.go)
	sums, err := c.idx.Sums(img.id)
	if err != nil {
		r.Message = "reading its checksums: " + err.Error()
		return r
	}
	if len(sums) != img.nChunks*sha256.Size {
		if !complete {
			r.Message = "partly cached, not checked: checksums are recorded when the whole image has been fetched"
			return r
		}
		return c.verifyNow(ctx, img)
	}
	f, err := k.open(c.store, img.id)
	if errors.Is(err, fs.ErrNotExist) {
		r.Message = "its data file is missing"
		return r
	}
	if err != nil {
		r.Message = "opening its data: " + err.Error()
		return r
	}
	defer f.Close()
	stamp, err := stampOf(f.f)
	if err != nil {
		r.Message = "reading its data file's status: " + err.Error()
		return r
	}
	bad, readErr, err := c.compareChunks(ctx, img, f, sums, k, &r)
	if err != nil {
		r.Message = fmt.Sprintf("check stopped after %d chunks: %v", r.Chunks, err)
	}
	if len(bad) > 0 {
		var inPlace bool
		if r.BadChunks, inPlace = c.quarantine(img, bad, readErr); inPlace {
			r.repairErr = c.awaitRepair(ctx, img)
		}
	}
	if err == nil {
		r.Message = fmt.Sprintf("%d chunks match their checksums", r.Chunks-len(bad))
		if len(bad) > 0 {
			r.Message += fmt.Sprintf("; %d did not (%s) and were dropped", len(bad), chunkList(bad))
		}
		if r.repairErr != nil {
			r.Message += "; " + r.repairErr.Error()
		}
		if len(bad) == 0 && complete && r.Chunks == img.nChunks {
			img.mu.Lock()
			img.markCheckedLocked(stamp)
			img.mu.Unlock()
		}
	}
	return r
}

// compareChunks hashes each present chunk (k.workers at once) and
// returns, in order, those whose sum differs from the one recorded or
// that could not be read (readErr is the first such error).
func (c *Cache) compareChunks(ctx context.Context, img *Image, f *checkFile, sums []byte, k *checker, r *imageCheck) (bad []int, readErr, err error) {
	var (
		next atomic.Int64
		mu   sync.Mutex // protects bad, readErr, err and r's counts
		wg   sync.WaitGroup
	)
	work := func(buf []byte) {
		defer wg.Done()
		h := sha256.New()
		var sum []byte
		for i := int(next.Add(1) - 1); i < img.nChunks; i = int(next.Add(1) - 1) {
			if ctx.Err() != nil {
				return
			}
			img.mu.Lock()
			has := img.present.Has(i)
			img.mu.Unlock()
			if !has {
				continue
			}
			h.Reset()
			n := img.chunkLen(i)
			herr := f.hashRange(ctx, h, int64(i)*img.chunkSize, n, buf, k.pace)
			sum = h.Sum(sum[:0])
			mu.Lock()
			switch {
			case ctx.Err() != nil:
			case errors.As(herr, new(paceError)):
				err = herr
				next.Store(int64(img.nChunks)) // stop every worker
			case herr != nil:
				bad = append(bad, i)
				if readErr == nil {
					readErr = herr
				}
			default:
				r.Chunks++
				r.bytes += n
				if !bytes.Equal(sum, sums[i*sha256.Size:(i+1)*sha256.Size]) {
					bad = append(bad, i)
				}
			}
			mu.Unlock()
		}
	}
	wg.Add(k.workers)
	for w := range k.workers {
		go work(k.bufs[w])
	}
	wg.Wait()
	slices.Sort(bad)
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return bad, readErr, err
}

// verifyNow verifies a complete image that has no chunk sums yet.
func (c *Cache) verifyNow(ctx context.Context, img *Image) (r imageCheck) {
	r.Name = img.entry.Name
	img.mu.Lock()
	run := img.startVerifyLocked()
	img.mu.Unlock()
	select {
	case <-run.done:
	case <-ctx.Done():
		r.Message = "interrupted"
		return r
	}
	if run.err != nil {
		r.Message = run.err.Error()
		return r
	}
	img.awaitSums(ctx) // made after the verdict (sums_after.go)
	r.Chunks, r.bytes = img.nChunks, img.entry.Size
	info := img.Info()
	switch info.State {
	case StateInvalid:
		r.Message = info.LastError
	case StateVerified:
		r.Message = "had no checksums: verified against its digest now, checksums recorded"
	default:
		r.Message = "had no checksums: recorded now (no digest to verify against)"
	}
	return r
}

// quarantine drops chunks found damaged at rest (or unreadable: readErr)
// and records why. It returns how many it dropped (a chunk may have gone
// meanwhile) and whether they were left in place, the image being open
// (see dropChunksLocked): they must then be fetched again at once
// (rest.go).
func (c *Cache) quarantine(img *Image, bad []int, readErr error) (dropped int, inPlace bool) {
	img.mu.Lock()
	var err error
	dropped, err = img.dropChunksLocked(bad)
	if dropped > 0 && img.users > 0 {
		img.rest.damaged = append(img.rest.damaged, bad...)
		inPlace = true
	}
	if dropped > 0 {
		if img.rec.Verdict == index.Verified {
			img.rec.Verdict = index.Unchecked // verified again once complete
		}
		img.recordErrorLocked(&Error{Op: "check", Name: img.entry.Name, Err: fmt.Errorf(
			"%w: %d cached chunks (%s) %s; dropped, they are fetched again when read",
			ErrDamaged, dropped, chunkList(bad), damageWhy(readErr))})
	}
	img.mu.Unlock()
	c.log.Error("cached data damaged; chunks dropped", "image", img.entry.Name, "chunks", chunkList(bad), "read_err", readErr)
	for _, i := range bad {
		c.dropped(img, int64(i)*img.chunkSize, img.chunkLen(i))
	}
	if err != nil {
		c.log.Warn("punching damaged chunks out of the cache file", "image", img.entry.Name, "err", err)
	}
	c.kickFlush()
	return dropped, inPlace
}

func damageWhy(readErr error) string {
	why := "no longer match the checksums recorded at verification"
	if readErr != nil {
		why += fmt.Sprintf(" or could not be read (%v)", readErr)
	}
	return why
}

// dropped tells the Notifier that bytes of img were dropped as wrong.
func (c *Cache) dropped(img *Image, off, n int64) {
	c.cfg.Notifier.PagesDropped(img, off, n)
}

// dropLocked forgets every chunk of the image and, if no one has it
// open, empties its data file. The bytes go while img.mu is held (the one
// disk write under it), so that no fetch can write a chunk that is then
// punched out. An open image keeps its bytes, as in dropChunksLocked: a
// read that found its chunk present just before the drop reads the file
// after it, and would read a hole as zeros; each chunk is made right by
// its next fetch, which writes over it.
func (img *Image) dropLocked() error {
	img.present.Clear()
	img.hashState.resetLocked()
	img.rest.checked = false
	img.dirty = true
	if img.users > 0 {
		return nil
	}
	return img.c.store.Punch(img.id, img.entry.Size)
}

// dropChunksLocked forgets the given chunks and, if no one has the image
// open, punches their bytes out of the data file (see dropLocked). An
// open may be a kernel passthrough that reads the file directly: it
// would read a hole as zeros, no better than the damaged bytes, while a
// chunk left in place is made right by its next fetch, which writes over
// it.
func (img *Image) dropChunksLocked(chunks []int) (int, error) {
	dropped := 0
	var err error
	for _, i := range chunks {
		if !img.present.Unset(i) {
			continue
		}
		dropped++
		img.hashState.resetLocked()
		img.rest.checked = false
		img.dirty = true
		if img.users > 0 {
			continue
		}
		if perr := img.c.store.PunchRange(img.id, int64(i)*img.chunkSize, img.chunkLen(i)); err == nil {
			err = perr
		}
	}
	return dropped, err
}

// chunkList describes chunk numbers for people: "3, 7, 12" or, if many,
// the first few and a count.
func chunkList(chunks []int) string {
	var b strings.Builder
	for k, i := range chunks {
		if k == 8 {
			fmt.Fprintf(&b, " and %d more", len(chunks)-k)
			break
		}
		if k > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, i)
	}
	if len(chunks) == 1 {
		return "chunk " + b.String()
	}
	return "chunks " + b.String()
}
