package control

import (
	"bufio"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// limitedBackend has a size limit, so that every metric of ours is served.
type limitedBackend struct{ *fakeBackend }

func (b limitedBackend) Stats() Stats {
	st := b.fakeBackend.Stats()
	st.MaxBytes = 1 << 30
	return st
}

// documentedMetric is a row of the metrics table of docs/api.md.
type documentedMetric struct {
	name   string // or a prefix ending in "*": a standard collector's family
	typ    string // counter, gauge; "various" for a prefix
	labels []string
}

var metricRow = regexp.MustCompile("^\\| `([a-z_]+\\*?)(?:\\{([a-z_,]+)\\})?` \\| ([a-z]+) \\|")

// documentedMetrics reads the table of the "Metrics" section of docs/api.md.
func documentedMetrics(t *testing.T) []documentedMetric {
	f, err := os.Open("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var doc []documentedMetric
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Metrics"
		}
		if m := metricRow.FindStringSubmatch(l); in && m != nil {
			d := documentedMetric{name: m[1], typ: m[3]}
			if m[2] != "" {
				d.labels = strings.Split(m[2], ",")
			}
			doc = append(doc, d)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(doc) < 10 {
		t.Fatalf("docs/api.md: %d rows in the metrics table; the table was not found", len(doc))
	}
	return doc
}

// scrape reads /metrics of a server of b and parses it.
func scrape(t *testing.T, b Backend) map[string]*dto.MetricFamily {
	t.Helper()
	_, c, _ := serve(t, b)
	text, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, text)
	}
	return families
}

// TestMetricsAsDocumented holds the metrics table of docs/api.md against
// what /metrics serves: every metric documented is served, with its type
// and labels, and every metric served is documented (the Go runtime's
// and the process's by their prefix, go_* and process_*).
func TestMetricsAsDocumented(t *testing.T) {
	doc := documentedMetrics(t)
	families := scrape(t, limitedBackend{newFakeBackend("a.img")})
	for _, d := range doc {
		if prefix, ok := strings.CutSuffix(d.name, "*"); ok {
			n := 0
			for name := range families {
				if strings.HasPrefix(name, prefix) {
					n++
				}
			}
			if n == 0 {
				t.Errorf("docs/api.md lists %s; /metrics has none", d.name)
			}
			continue
		}
		mf := families[d.name]
		if mf == nil {
			t.Errorf("docs/api.md lists %s; /metrics does not have it", d.name)
			continue
		}
		if typ := strings.ToLower(mf.GetType().String()); typ != d.typ {
			t.Errorf("%s: type %s, docs/api.md says %s", d.name, typ, d.typ)
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			if !slices.Equal(labels, d.labels) {
				t.Errorf("%s: labels %q, docs/api.md says %q", d.name, labels, d.labels)
			}
		}
	}
	for name := range families {
		documented := slices.ContainsFunc(doc, func(d documentedMetric) bool {
			prefix, ok := strings.CutSuffix(d.name, "*")
			return d.name == name || ok && strings.HasPrefix(name, prefix)
		})
		if !documented {
			t.Errorf("/metrics has %s; docs/api.md does not list it", name)
		}
	}
}

// TestMetricsLint: the names, units and help of our metrics pass
// Prometheus's own linter.
func TestMetricsLint(t *testing.T) {
	problems, err := testutil.CollectAndLint(statsCollector{limitedBackend{newFakeBackend("a.img")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// BenchmarkMetrics is the cost of one scrape of /metrics, without the
// socket.
func BenchmarkMetrics(b *testing.B) {
	h := (&Server{b: limitedBackend{newFakeBackend("a.img")}, log: slog.New(slog.DiscardHandler)}).Handler()
	req := httptest.NewRequest("GET", "/metrics", nil)
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code)
		}
	}
}
