package control

import (
	"log/slog"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves /metrics: the backend's Stats as Prometheus
// metrics, with the Go runtime's and the process's. Counters end in
// _total and start at zero with each daemon; sizes are in bytes.
func metricsHandler(b Backend, log *slog.Logger) http.Handler {
	reg := prometheus.NewRegistry() // this server's own: no global state
	reg.MustRegister(statsCollector{b},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // a process metric that cannot be read leaves the rest
	})
}

// statMetric is one metric taken from Stats; show says whether it has a
// value (false: left out).
type statMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(Stats) (v float64, show bool)
}

func counter(name, help string, v func(Stats) uint64) statMetric {
	return statMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.CounterValue,
		func(s Stats) (float64, bool) { return float64(v(s)), true }}
}

func gauge(name, help string, v func(Stats) int64) statMetric {
	return statMetric{prometheus.NewDesc(name, help, nil, nil), prometheus.GaugeValue,
		func(s Stats) (float64, bool) { return float64(v(s)), true }}
}

var statMetrics = []statMetric{
	counter("imgcache_opens_total", "Opens of images for reading.", func(s Stats) uint64 { return s.Opens }),
	counter("imgcache_hits_total", "Reads that reached the daemon and found their bytes cached.", func(s Stats) uint64 { return s.Hits }),
	counter("imgcache_misses_total", "Reads that waited for bytes from the upstream.", func(s Stats) uint64 { return s.Misses }),
	counter("imgcache_upstream_bytes_total", "Bytes received from the upstream.", func(s Stats) uint64 { return s.UpstreamBytes }),
	counter("imgcache_served_bytes_total", "Bytes returned to reads that reached the daemon.", func(s Stats) uint64 { return s.ServedBytes }),
	counter("imgcache_evictions_total", "Images whose cached bytes were dropped.", func(s Stats) uint64 { return s.Evictions }),
	counter("imgcache_errors_total", "Range fetches from the upstream that failed.", func(s Stats) uint64 { return s.Errors }),
	counter("imgcache_retries_total", "Range fetches tried again after a temporary failure.", func(s Stats) uint64 { return s.Retries }),
	counter("imgcache_direct_reads_total", "Reads served from the upstream without storing, for want of room.", func(s Stats) uint64 { return s.DirectReads }),
	gauge("imgcache_fetches_in_flight", "Range requests to the upstream running now.", func(s Stats) int64 { return s.FetchesInFlight }),
	gauge("imgcache_cache_bytes", "Disk space of the cached data (allocated blocks).", func(s Stats) int64 { return s.CacheBytes }),
	{prometheus.NewDesc("imgcache_max_bytes", "The cache's size limit.", nil, nil), prometheus.GaugeValue,
		func(s Stats) (float64, bool) { return float64(s.MaxBytes), s.MaxBytes > 0 }}, // no limit: none shown
	gauge("imgcache_index_bytes", "Disk space of the index (allocated blocks), taken off the limit.", func(s Stats) int64 { return s.IndexBytes }),
	gauge("imgcache_queue_length", "Images waiting to be prefetched or being prefetched.", func(s Stats) int64 { return int64(s.QueueLength) }),
	gauge("imgcache_pinned_images", "Images pinned in the cache.", func(s Stats) int64 { return int64(s.Pinned) }),
	{prometheus.NewDesc("imgcache_passthrough", "1 if complete images are read through kernel FUSE passthrough.", nil, nil), prometheus.GaugeValue,
		func(s Stats) (float64, bool) {
			if s.ServeMode == "passthrough" {
				return 1, true
			}
			return 0, s.ServeMode != "" // a backend that does not say: none shown
		}},
}

var imagesByState = prometheus.NewDesc("imgcache_images", "Images in the catalog, by cache state.", []string{"state"}, nil)

// states are shown even when no image is in them, so that a dashboard's
// series do not come and go.
var states = []string{"absent", "partial", "complete", "verified", "invalid"}

// statsCollector exports a Backend's Stats, taken once a scrape.
type statsCollector struct{ b Backend }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range statMetrics {
		ch <- m.desc
	}
	ch <- imagesByState
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	for _, m := range statMetrics {
		if v, show := m.value(st); show {
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, v)
		}
	}
	shown := slices.Clone(states)
	for s := range st.ByState {
		if !slices.Contains(shown, s) {
			shown = append(shown, s)
		}
	}
	for _, s := range shown {
		ch <- prometheus.MustNewConstMetric(imagesByState, prometheus.GaugeValue, float64(st.ByState[s]), s)
	}
}
