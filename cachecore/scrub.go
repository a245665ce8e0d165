package cachecore

import (
	"math/rand/v2"
	"time"
)

// The scrub checks every cached image at rest (checkImage) in passes, one
// starting every ScrubInterval, reading at most ScrubRate bytes a second
// with O_DIRECT (checkread.go): a slow, steady read that neither competes
// much with readers for the disk nor touches the kernel's page cache. The
// first pass starts soon after start-up, since damage done while the
// daemon was down is what it is most likely to find. Each pass starts at
// a random image and goes round in name order, so daemons restarted more
// often than a pass takes still cover every image in time.

// DefaultScrubRate caps the scrub's reads when Config.ScrubRate is zero.
const DefaultScrubRate = 16 << 20

// DefaultScrubInterval is the daemon's --scrub-interval.
const DefaultScrubInterval = 24 * time.Hour

// scrubStartDelay is how long after start-up the first pass waits (less
// if ScrubInterval is shorter): start-up has enough to do.
const scrubStartDelay = time.Minute

// scrubLoop runs a paced check of the whole cache every ScrubInterval.
func (c *Cache) scrubLoop() {
	defer c.wg.Done()
	first := time.NewTimer(min(c.cfg.ScrubInterval, scrubStartDelay))
	defer first.Stop()
	select {
	case <-c.ctx.Done():
		return
	case <-first.C:
	}
	t := time.NewTicker(c.cfg.ScrubInterval)
	defer t.Stop()
	for {
		c.scrubPass()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cache) scrubPass() {
	start := c.now()
	imgs, _, err := c.imagesBelow("") // cold images have nothing to check
	if err != nil {
		c.log.Warn("scrub", "err", err)
		return
	}
	if len(imgs) > 1 {
		k := rand.N(len(imgs))
		imgs = append(imgs[k:], imgs[:k]...)
	}
	rate := c.cfg.ScrubRate
	if rate <= 0 {
		rate = DefaultScrubRate
	}
	res, err := c.checkAll(c.ctx, imgs, newChecker(rate))
	if c.ctx.Err() != nil {
		return
	}
	log := c.log.Info
	if !res.OK() || err != nil {
		log = c.log.Warn
	}
	log("scrub done", "images", res.Images, "chunks", res.Chunks, "bytes", res.Bytes,
		"bad_chunks", res.BadChunks, "invalid", res.Invalid, "took", c.now().Sub(start).Round(time.Millisecond), "err", err)
}
