package cachecore

import (
	"context"
	"time"
)

// The scrub checks every cached image at rest (Check) every
// ScrubInterval, reading at most ScrubRate bytes a second so that it
// never competes much with readers for the disk. It is off unless
// ScrubInterval is set: see docs/integrity.md for why.

// DefaultScrubRate caps the scrub's reads when Config.ScrubRate is zero.
const DefaultScrubRate = 16 << 20

// scrubLoop runs a paced Check of the whole cache every ScrubInterval.
func (c *Cache) scrubLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.ScrubInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		start := c.now()
		res, err := c.check(c.ctx, "", newPacer(c.cfg.ScrubRate))
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
}

// pacer holds a reader to a rate: after each n bytes, wait reports back
// no sooner than the rate allows for all bytes so far. A nil pacer does
// not wait.
type pacer struct {
	rate  float64 // bytes per second
	start time.Time
	done  int64
}

func newPacer(rate int64) *pacer {
	if rate <= 0 {
		rate = DefaultScrubRate
	}
	return &pacer{rate: float64(rate), start: time.Now()}
}

func (p *pacer) wait(ctx context.Context, n int64) error {
	if p == nil {
		return nil
	}
	p.done += n
	due := p.start.Add(time.Duration(float64(p.done) / p.rate * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
