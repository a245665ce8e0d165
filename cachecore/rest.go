package cachecore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"
)

// Bytes at rest since the mount. A verified image's data file can be
// damaged while the daemon is not looking: by a disk fault, or by another
// program, between two mounts or during one. Verification proved the
// bytes once; what this process knows since it started is kept here, in
// memory only, so a new mount knows nothing.
//
// Strict mode serves an image's bytes (through the daemon, the kernel's
// page cache or passthrough) only once every chunk was compared with its
// recorded sum since the mount: at verification, by the scrub, or by the
// check its first open makes (Handle.CheckAtOpen). Either mode checks an
// image again at an open if its data file changed since (its inode or
// ctime: a write by another program): a cheap stat per open. A fault the
// disk makes silently after the check is left to the scrub (scrub.go).

// restState is what this process knows of an image's data file at rest.
type restState struct {
	checked bool       // every chunk compared with its sum since the cache opened, file unchanged since
	stamp   fileStamp  // the data file when checked or (lazy mode) first opened; zero: not seen
	run     *verifyRun // the check an open asked for, running now; nil if none
	damaged []int      // chunks dropped as damaged but left in the data file (it was open), not yet fetched again
	repair  *verifyRun // the fetch of damaged running now; nil if none
}

// fileStamp tells a data file and its last change apart: a write to it,
// a punched hole, a new file renamed over it.
type fileStamp struct {
	ino   uint64
	ctime time.Time
}

func stampOf(f *os.File) (fileStamp, error) {
	fi, err := f.Stat()
	if err != nil {
		return fileStamp{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStamp{}, errors.New("no inode status")
	}
	return fileStamp{ino: st.Ino, ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec)}, nil
}

// settledLocked: the image's bytes may be handed to the kernel to keep
// (FOPEN_KEEP_CACHE) or to read itself (passthrough). Strict mode asks
// that they were checked since the mount, too.
func (img *Image) settledLocked() bool {
	return img.trustedLocked() && (img.c.cfg.Verify != VerifyStrict || img.rest.checked)
}

// markCheckedLocked records that every chunk of the data file as it was
// at stamp matched its sum.
func (img *Image) markCheckedLocked(stamp fileStamp) {
	if img.trustedLocked() {
		img.rest.checked, img.rest.stamp = true, stamp
	}
}

// checkAtOpen is Handle.CheckAtOpen; file is the handle's data file.
func (img *Image) checkAtOpen(ctx context.Context, file *os.File) error {
	if file == nil || img.c.storageLost() != nil {
		// The storage is lost (storage.go): with no data file reads go
		// around the cache; an open one was unlinked with its directory
		// (a new ctime, not new bytes), and no one can reach it by name
		// to change it, nor can it be checked by name.
		return nil
	}
	img.awaitVerdictUnderway(ctx) // verify.go
	stamp, err := stampOf(file)
	if err != nil {
		return &Error{Op: "open", Name: img.entry.Name, Err: err}
	}
	img.mu.Lock()
	if len(img.rest.damaged) > 0 && img.users == 1 {
		img.rest.damaged = nil // no one else has it open: the daemon serves the next reads, and knows
	}
	if len(img.rest.damaged) > 0 {
		run, err := img.startRepairLocked()
		img.mu.Unlock()
		if err == nil {
			err = awaitRun(ctx, run)
		}
		if err != nil {
			return err
		}
		img.mu.Lock()
	}
	if !img.trustedLocked() { // nothing settled yet: reads fetch and verify
		img.mu.Unlock()
		return nil
	}
	r := &img.rest
	if r.stamp == (fileStamp{}) && img.c.cfg.Verify != VerifyStrict {
		r.stamp = stamp // lazy: nothing checked, but a later change will show
	}
	if r.checked && r.stamp != stamp {
		r.checked = false
	}
	if r.stamp == stamp && (r.checked || img.c.cfg.Verify != VerifyStrict) {
		img.mu.Unlock()
		return nil
	}
	run, err := img.startRestCheckLocked()
	img.mu.Unlock()
	if err != nil {
		return err
	}
	return awaitRun(ctx, run)
}

// startRestCheckLocked starts a check of the image's chunks on the
// cache's context, unless one is running, and returns the one running.
func (img *Image) startRestCheckLocked() (*verifyRun, error) {
	if img.rest.run == nil {
		if img.c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		img.rest.run = &verifyRun{done: make(chan struct{})}
		img.c.wg.Add(1)
		go img.c.restCheck(img, img.rest.run)
	}
	return img.rest.run, nil
}

// restCheck checks an image for an open. It ends well when the image is
// checked or, having dropped what did not match, no longer settled.
func (c *Cache) restCheck(img *Image, run *verifyRun) {
	defer c.wg.Done()
	defer func() {
		img.mu.Lock()
		img.rest.run = nil
		img.mu.Unlock()
		close(run.done)
	}()
	start := c.now()
	r := c.checkImage(c.ctx, img, newChecker(0))
	if c.ctx.Err() != nil {
		run.err = ErrClosed
		return
	}
	if r.repairErr != nil {
		run.err = r.repairErr
		return
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.rest.checked || !img.trustedLocked() {
		c.log.Debug("checked at open", "image", img.entry.Name, "chunks", r.Chunks,
			"bad_chunks", r.BadChunks, "took", c.now().Sub(start).Round(time.Millisecond))
		return
	}
	run.err = &Error{Op: "check", Name: img.entry.Name, Err: errors.New(r.Message)}
	c.log.Warn("cached image could not be checked", "image", img.entry.Name, "err", r.Message)
	img.recordErrorLocked(run.err)
}

// awaitRepair waits for the damage left in img's data file to be fetched
// again (see CheckAtOpen).
func (c *Cache) awaitRepair(ctx context.Context, img *Image) error {
	img.mu.Lock()
	run, err := img.startRepairLocked()
	img.mu.Unlock()
	if err != nil {
		return err
	}
	return awaitRun(ctx, run)
}

// startRepairLocked starts fetching the damaged chunks again, unless that
// is running, and returns the run.
func (img *Image) startRepairLocked() (*verifyRun, error) {
	if img.rest.repair == nil {
		if img.c.ctx.Err() != nil {
			return nil, ErrClosed
		}
		img.rest.repair = &verifyRun{done: make(chan struct{})}
		img.c.wg.Add(1)
		go img.c.repair(img, img.rest.repair, slices.Clone(img.rest.damaged))
	}
	return img.rest.repair, nil
}

// repair fetches chunks again that were found damaged and left in the
// data file, writing the right bytes over the damage; they are checked
// against their sums as they land (sums.go). If that fails, the image's
// error says so, since the damage is still there to be read.
func (c *Cache) repair(img *Image, run *verifyRun, chunks []int) {
	defer c.wg.Done()
	img.mu.Lock()
	err := img.acquireLocked()
	img.mu.Unlock()
	if err == nil {
		for _, i := range chunks {
			if err = img.ensure(c.ctx, i, i); err != nil {
				break
			}
		}
		img.release()
	}
	img.mu.Lock()
	defer func() {
		img.rest.repair = nil
		img.mu.Unlock()
		close(run.done)
	}()
	switch {
	case err == nil:
		img.rest.damaged = slices.DeleteFunc(img.rest.damaged, func(i int) bool { return slices.Contains(chunks, i) })
	case c.ctx.Err() != nil:
		run.err = ErrClosed
	default:
		run.err = &Error{Op: "check", Name: img.entry.Name, Err: fmt.Errorf(
			"%w: %s no longer matched the checksums recorded at verification and, others having the image open, "+
				"stayed in the data file; fetching again failed: %v", ErrDamaged, chunkList(chunks), err)}
		img.recordErrorLocked(run.err)
		c.log.Error("damaged chunks could not be fetched again", "image", img.entry.Name, "err", err)
	}
}
