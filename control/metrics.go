package control

import (
	"fmt"
	"io"
	"slices"
)

// writeMetrics writes st in the Prometheus text exposition format
// (version 0.0.4). Counters end in _total and start at zero with each
// daemon; sizes are in bytes.
func writeMetrics(w io.Writer, st Stats) {
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("imgcache_opens_total", "Opens of images for reading.", st.Opens)
	counter("imgcache_hits_total", "Reads that reached the daemon and found their bytes cached.", st.Hits)
	counter("imgcache_misses_total", "Reads that waited for bytes from the upstream.", st.Misses)
	counter("imgcache_upstream_bytes_total", "Bytes received from the upstream.", st.UpstreamBytes)
	counter("imgcache_served_bytes_total", "Bytes returned to reads that reached the daemon.", st.ServedBytes)
	counter("imgcache_evictions_total", "Images whose cached bytes were dropped.", st.Evictions)
	counter("imgcache_errors_total", "Range fetches from the upstream that failed.", st.Errors)
	counter("imgcache_retries_total", "Range fetches tried again after a temporary failure.", st.Retries)
	counter("imgcache_direct_reads_total", "Reads served from the upstream without storing, for want of room.", st.DirectReads)
	gauge("imgcache_fetches_in_flight", "Range requests to the upstream running now.", st.FetchesInFlight)
	gauge("imgcache_cache_bytes", "Disk space of the cached data (allocated blocks).", st.CacheBytes)
	if st.MaxBytes > 0 {
		gauge("imgcache_max_bytes", "The cache's size limit.", st.MaxBytes)
	}
	gauge("imgcache_index_bytes", "Disk space of the index, not part of the limit.", st.IndexBytes)
	gauge("imgcache_queue_length", "Images waiting to be prefetched or being prefetched.", int64(st.QueueLength))
	gauge("imgcache_pinned_images", "Images pinned in the cache.", int64(st.Pinned))

	fmt.Fprintf(w, "# HELP imgcache_images Images in the catalog, by cache state.\n# TYPE imgcache_images gauge\n")
	states := []string{"absent", "partial", "complete", "verified", "invalid"}
	for s := range st.ByState {
		if !slices.Contains(states, s) {
			states = append(states, s)
		}
	}
	for _, s := range states {
		fmt.Fprintf(w, "imgcache_images{state=%q} %d\n", s, st.ByState[s])
	}
	if st.ServeMode != "" {
		on := 0
		if st.ServeMode == "passthrough" {
			on = 1
		}
		gauge("imgcache_passthrough", "1 if complete images are read through kernel FUSE passthrough.", int64(on))
	}
}
