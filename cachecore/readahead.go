package cachecore

// Read-ahead. A handle watches its reads for a sequential stream; once the
// stream has covered readAheadStart, it wants the chunks up to a window
// ahead of the stream (twice what the stream covered, up to
// Config.ReadAhead) and pumps range requests for them, a whole run at a
// time, into the free fetch slots. A read-ahead run that ends pumps again,
// so the slots stay busy while the reader is blocked in the kernel, not
// only when its next READ arrives.

// readAheadStart is how much a sequential stream must cover before
// read-ahead starts. The kernel's own read-ahead of a file's start turns
// one 1 MiB read into 2 MiB of READs; starting beyond that keeps a reader
// of a small part of an image from fetching more than the kernel asked.
const readAheadStart = 4 << 20

// plan notes a read of [off, off+n) (its last chunk is last) and reports
// whether read-ahead is wanted. Reads a little out of order, as the
// kernel's concurrent read-ahead sends them, still count as sequential.
func (h *Handle) plan(off int64, n int, last int) bool {
	img := h.img
	cs := img.chunkSize
	h.mu.Lock()
	defer h.mu.Unlock()
	end := off + int64(n)
	if h.seqEnd >= 0 && off <= h.seqEnd+cs && end >= h.seqEnd-2*cs {
		h.seqLen += max(0, end-h.seqEnd)
		h.seqEnd = max(h.seqEnd, end)
	} else {
		h.seqEnd, h.seqLen, h.raEnd, h.raWant = end, int64(n), 0, 0
	}
	maxWindow := img.c.cfg.ReadAhead
	if h.seqLen < max(readAheadStart, 2*cs) || maxWindow <= 0 {
		return false
	}
	window := min(2*h.seqLen, maxWindow)
	h.raEnd = max(h.raEnd, last+1)
	h.raWant = max(h.raWant, min(img.nChunks, int((h.seqEnd+window+cs-1)/cs)))
	// Whole runs only, while read-ahead is ahead of the reader: one long
	// range request costs less than many short ones.
	return h.raWant-h.raEnd >= maxRunChunks || h.raWant == img.nChunks || h.raEnd == last+1
}

// pump starts read-ahead runs toward raWant while fetch slots are free.
func (h *Handle) pump() {
	h.mu.Lock()
	from, to, closed := h.raEnd, h.raWant, h.closed
	h.mu.Unlock()
	if closed || from >= to {
		return
	}
	img := h.img
	img.mu.Lock()
	if img.file == nil { // every user gone: nothing to read ahead for
		img.mu.Unlock()
		return
	}
	img.users++ // keeps the data file open while runs start
	img.mu.Unlock()
	defer img.release()
	got := img.c.readAhead(img, from, to, h.pump)
	h.mu.Lock()
	h.raEnd = max(h.raEnd, got)
	h.mu.Unlock()
}
