package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// fakeBackend is an in-memory Backend that records what it was asked.
type fakeBackend struct {
	mu     sync.Mutex
	images map[string]*Image
	pins   []Pin
	queue  []string
	calls  []string
	fail   error // if set, every action fails with it
}

func newFakeBackend(names ...string) *fakeBackend {
	f := &fakeBackend{images: map[string]*Image{}}
	for _, n := range names {
		f.images[n] = &Image{Name: n, Size: 1000, CachedBytes: 500, State: "partial", Hits: 3}
	}
	return f
}

func (f *fakeBackend) call(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeBackend) find(name string) (*Image, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	img := f.images[name]
	if img == nil {
		return nil, fmt.Errorf("find %q: %w", name, ErrNotFound)
	}
	return img, nil
}

// CheckName takes the names the catalog could hold, as mount's backend does.
func (f *fakeBackend) CheckName(name string) error {
	clean, err := upstream.CleanName(name)
	if err == nil && clean != name {
		err = fmt.Errorf("%w %q: its clean form is %q", upstream.ErrUnsafeName, name, clean)
	}
	return err
}

func (f *fakeBackend) Images(prefix string) iter.Seq[Image] {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l []Image
	for _, img := range f.images {
		if strings.HasPrefix(img.Name, prefix) {
			l = append(l, *img)
		}
	}
	slices.SortFunc(l, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	return slices.Values(l)
}

func (f *fakeBackend) Image(name string) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, err := f.find(name)
	if err != nil {
		return Image{}, err
	}
	return *img, nil
}

func (f *fakeBackend) Evict(name string) (EvictResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("evict %s", name)
	img, err := f.find(name)
	if err != nil {
		return EvictResult{}, err
	}
	if img.Pinned {
		return EvictResult{}, fmt.Errorf("evict %q: %w", name, ErrConflict)
	}
	freed := img.CachedBytes
	img.CachedBytes, img.State = 0, "absent"
	return EvictResult{Evicted: []string{name}, FreedBytes: freed}, nil
}

func (f *fakeBackend) EvictAll() (EvictResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("evict-all")
	if f.fail != nil {
		return EvictResult{}, f.fail
	}
	var r EvictResult
	for _, img := range f.images {
		if img.Pinned {
			r.Skipped = append(r.Skipped, img.Name)
			continue
		}
		r.Evicted = append(r.Evicted, img.Name)
		r.FreedBytes += img.CachedBytes
		img.CachedBytes, img.State = 0, "absent"
	}
	return r, nil
}

func (f *fakeBackend) Pin(name string, pinned bool) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("pin %s %v", name, pinned)
	img, err := f.find(name)
	if err != nil {
		return Image{}, err
	}
	img.Pinned = pinned
	f.pins = slices.DeleteFunc(f.pins, func(p Pin) bool { return p.Kind == PinName && p.Pattern == name })
	if pinned {
		f.pins = append(f.pins, Pin{Kind: PinName, Pattern: name, Images: []string{name}})
	}
	return *img, nil
}

func (f *fakeBackend) Pins() []Pin {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pins)
}

func (f *fakeBackend) AddPin(kind, pattern string) (Pin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("add pin %s %s", kind, pattern)
	p := Pin{Kind: kind, Pattern: pattern, Images: []string{}}
	f.pins = append(f.pins, p)
	return p, nil
}

func (f *fakeBackend) RemovePin(kind, pattern string) (Pin, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("remove pin %s %s", kind, pattern)
	i := slices.IndexFunc(f.pins, func(p Pin) bool { return p.Kind == kind && p.Pattern == pattern })
	if i < 0 {
		return Pin{}, fmt.Errorf("unpin %s %q: %w", kind, pattern, ErrNotFound)
	}
	p := f.pins[i]
	f.pins = slices.Delete(f.pins, i, i+1)
	return p, nil
}

func (f *fakeBackend) Queue(name string) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("queue %s", name)
	img, err := f.find(name)
	if err != nil {
		return Image{}, err
	}
	img.Queued = true
	f.queue = append(f.queue, name)
	return *img, nil
}

func (f *fakeBackend) Dequeue(name string) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("dequeue %s", name)
	img, err := f.find(name)
	if err != nil {
		return Image{}, err
	}
	img.Queued = false
	f.queue = slices.DeleteFunc(f.queue, func(n string) bool { return n == name })
	return *img, nil
}

func (f *fakeBackend) Queued() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queue)
}

func (f *fakeBackend) Prune(ctx context.Context) (PruneResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("prune")
	return PruneResult{Evicted: []string{"x"}, FreedBytes: 7, UsageBytes: 10, LowWaterBytes: 16, MaxBytes: 20}, f.fail
}

func (f *fakeBackend) Clean(ctx context.Context) (CleanResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("clean")
	return CleanResult{Removed: []string{"y"}, FreedBytes: 5}, f.fail
}

func (f *fakeBackend) Verify(ctx context.Context, name string) (VerifyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.call("verify %q", name)
	if name == "" {
		return VerifyResult{Images: 1, Chunks: 1, Reports: []VerifyReport{{Name: "a", State: "verified", Chunks: 1}}}, f.fail
	}
	if _, err := f.find(name); err != nil {
		return VerifyResult{}, err
	}
	return VerifyResult{Images: 1, Chunks: 2, BadChunks: 1,
		Reports: []VerifyReport{{Name: name, State: "partial", Chunks: 2, BadChunks: 1, Message: "chunk 0 differs"}}}, nil
}

func (f *fakeBackend) Stats() Stats {
	return Stats{Source: "http://up/", PID: 42, Images: len(f.images),
		ByState: map[string]int{"partial": len(f.images)}, Hits: 11, Misses: 4,
		UpstreamBytes: 1 << 20, CacheBytes: 500, IndexBytes: 99, QueueLength: 1, ServeMode: "passthrough"}
}

// serve starts a server on a socket in a new directory and a client of it.
func serve(t *testing.T, b Backend) (*Server, *Client, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Listen(dir, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return s, c, dir
}

// Names with '/' and characters that mean something in URLs.
var oddNames = []string{"a.img", "sub/dir/b.img", "with space/c%20d?e#f.img", "ünï/cödé.img", "a..b/c...", "%2E%2E/x"}

func TestEveryEndpoint(t *testing.T) {
	ctx := context.Background()
	f := newFakeBackend(oddNames...)
	_, c, _ := serve(t, f)

	imgs, err := c.Images(ctx)
	if err != nil || len(imgs) != len(oddNames) {
		t.Fatalf("Images: %v %+v", err, imgs)
	}
	for _, name := range oddNames {
		img, err := c.Image(ctx, name)
		if err != nil || img.Name != name || img.Hits != 3 {
			t.Fatalf("Image(%q): %v %+v", name, err, img)
		}
		if img, err := c.Pin(ctx, name, true); err != nil || !img.Pinned {
			t.Fatalf("Pin(%q): %v %+v", name, err, img)
		}
		if pins, err := c.Pins(ctx); err != nil || !slices.ContainsFunc(pins, func(p Pin) bool { return p.Kind == PinName && p.Pattern == name }) {
			t.Fatalf("Pins after pinning %q: %v %v", name, err, pins)
		}
		if _, err := c.Evict(ctx, name); !isStatus(err, http.StatusConflict) {
			t.Fatalf("Evict(%q) pinned: %v, want 409", name, err)
		}
		if img, err := c.Pin(ctx, name, false); err != nil || img.Pinned {
			t.Fatalf("unpin %q: %v %+v", name, err, img)
		}
		if r, err := c.Evict(ctx, name); err != nil || r.FreedBytes != 500 || !slices.Equal(r.Evicted, []string{name}) {
			t.Fatalf("Evict(%q): %v %+v", name, err, r)
		}
		if img, err := c.Queue(ctx, name); err != nil || !img.Queued {
			t.Fatalf("Queue(%q): %v %+v", name, err, img)
		}
		if q, err := c.Queued(ctx); err != nil || !slices.Equal(q, []string{name}) {
			t.Fatalf("Queued: %v %v", err, q)
		}
		if img, err := c.Dequeue(ctx, name); err != nil || img.Queued {
			t.Fatalf("Dequeue(%q): %v %+v", name, err, img)
		}
		if r, err := c.Verify(ctx, name); err != nil || len(r.Reports) != 1 || r.Reports[0].Name != name || !r.Reports[0].Failed() {
			t.Fatalf("Verify(%q): %v %+v", name, err, r)
		}
	}
	if q, err := c.Queued(ctx); err != nil || q == nil || len(q) != 0 {
		t.Fatalf("empty queue: %v %#v (want [], not null)", err, q)
	}
	f.images["a.img"].Pinned = true
	if r, err := c.EvictAll(ctx); err != nil || len(r.Evicted) != len(oddNames)-1 || !slices.Equal(r.Skipped, []string{"a.img"}) {
		t.Fatalf("EvictAll: %v %+v", err, r)
	}
	if r, err := c.Prune(ctx); err != nil || r.FreedBytes != 7 || r.MaxBytes != 20 || r.LowWaterBytes != 16 || !slices.Equal(r.Evicted, []string{"x"}) {
		t.Fatalf("Prune: %v %+v", err, r)
	}
	if r, err := c.Clean(ctx); err != nil || r.FreedBytes != 5 || !slices.Equal(r.Removed, []string{"y"}) {
		t.Fatalf("Clean: %v %+v", err, r)
	}
	if r, err := c.Verify(ctx, ""); err != nil || len(r.Reports) != 1 || r.Reports[0].Failed() {
		t.Fatalf("Verify all: %v %+v", err, r)
	}
	if st, err := c.Stats(ctx); err != nil || st.Hits != 11 || st.PID != 42 || st.ByState["partial"] != len(oddNames) {
		t.Fatalf("Stats: %v %+v", err, st)
	}
	want := []string{}
	for _, n := range oddNames {
		want = append(want, "pin "+n+" true", "evict "+n, "pin "+n+" false", "evict "+n,
			"queue "+n, "dequeue "+n, fmt.Sprintf("verify %q", n))
	}
	want = append(want, "evict-all", "prune", "clean", `verify ""`)
	if !slices.Equal(f.calls, want) {
		t.Fatalf("backend calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
}

func isStatus(err error, code int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == code
}

func TestErrorsAreJSONWithStatus(t *testing.T) {
	ctx := context.Background()
	f := newFakeBackend("a.img")
	_, c, dir := serve(t, f)

	for name, call := range map[string]func() error{
		"image":   func() error { _, err := c.Image(ctx, "nope/x.img"); return err },
		"evict":   func() error { _, err := c.Evict(ctx, "nope/x.img"); return err },
		"pin":     func() error { _, err := c.Pin(ctx, "nope/x.img", true); return err },
		"unpin":   func() error { _, err := c.Pin(ctx, "nope/x.img", false); return err },
		"queue":   func() error { _, err := c.Queue(ctx, "nope/x.img"); return err },
		"dequeue": func() error { _, err := c.Dequeue(ctx, "nope/x.img"); return err },
		"verify":  func() error { _, err := c.Verify(ctx, "nope/x.img"); return err },
	} {
		err := call()
		if !NotFound(err) || !strings.Contains(err.Error(), "nope/x.img") || !strings.Contains(err.Error(), "no such image") {
			t.Errorf("%s of an unknown image: %v; want 404 naming it", name, err)
		}
	}

	for _, tc := range []struct {
		err  error
		code int
	}{
		{ErrBadName, http.StatusBadRequest},
		{ErrConflict, http.StatusConflict},
		{ErrNoRoom, http.StatusInsufficientStorage},
		{ErrNotMounted, http.StatusServiceUnavailable},
	} {
		f.fail = WithKind(errors.New("prune: "+tc.err.Error()), tc.err)
		if _, err := c.Prune(ctx); !isStatus(err, tc.code) || !errors.Is(err, tc.err) || err.Error() != f.fail.Error() {
			t.Errorf("%v: %v, want %d with its message", tc.err, err, tc.code)
		}
	}
	f.fail = errors.New("disk on fire")
	if _, err := c.Clean(ctx); !isStatus(err, http.StatusInternalServerError) || err.Error() != "disk on fire" {
		t.Errorf("failure: %v, want 500 with the message", err)
	}

	// Routes that do not exist, or not with that method, answer JSON too.
	hc := rawClient(dir)
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/v1/nothing", http.StatusNotFound},
		{"GET", "/", http.StatusNotFound},
		{"POST", "/v1/images", http.StatusMethodNotAllowed},
		{"GET", "/v1/prune", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body apiError
		derr := json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || derr != nil || body.Error == "" {
			t.Errorf("%s %s: %d %q (%v); want %d with a JSON error", tc.method, tc.path, resp.StatusCode, body.Error, derr, tc.code)
		}
	}
}

// TestNamesThatAreNotNames: a name no catalog could hold reaches the
// server as given (not cleaned by the mux into another route: "../x"
// was "DELETE /v1/x", no such endpoint) and is refused with 400 naming
// it, before the backend is asked.
func TestNamesThatAreNotNames(t *testing.T) {
	ctx := context.Background()
	f := newFakeBackend("a.img", "x")
	_, c, _ := serve(t, f)
	for _, name := range []string{"../x", "..", ".", "a/../x", "a/./x", "a//b", "/a.img", "a.img/", "", "a\nb", "bidi\u202egpj.exe", ".hidden"} {
		for op, call := range map[string]func() error{
			"image":   func() error { _, err := c.Image(ctx, name); return err },
			"evict":   func() error { _, err := c.Evict(ctx, name); return err },
			"pin":     func() error { _, err := c.Pin(ctx, name, true); return err },
			"unpin":   func() error { _, err := c.Pin(ctx, name, false); return err },
			"queue":   func() error { _, err := c.Queue(ctx, name); return err },
			"dequeue": func() error { _, err := c.Dequeue(ctx, name); return err },
			"verify":  func() error { _, err := c.Verify(ctx, name); return err },
		} {
			if op == "verify" && name == "" {
				continue // every image
			}
			err := call()
			if !isStatus(err, http.StatusBadRequest) || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) ||
				strings.Contains(err.Error(), "\n") {
				t.Errorf("%s %q: %v; want 400 quoting the name", op, name, err)
			}
		}
	}
	// Another client (curl --path-as-is) gets the same answer.
	_, _, dir := serve(t, f)
	req, _ := http.NewRequest("DELETE", "http://x/v1/images/%2E%2E/x", nil)
	resp, err := rawClient(dir).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body apiError
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || body.Error != `unsafe name "../x": component ".."` {
		t.Errorf("DELETE /v1/images/%%2E%%2E/x: %d %q; want 400 naming the name", resp.StatusCode, body.Error)
	}
	if len(f.calls) != 0 {
		t.Fatalf("the backend was asked: %q", f.calls)
	}
}

func TestProfilerOnSocket(t *testing.T) {
	_, _, dir := serve(t, newFakeBackend())
	resp, err := rawClient(dir).Get("http://x/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/pprof/cmdline: %s", resp.Status)
	}
}

func rawClient(dir string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialUnix(ctx, filepath.Join(dir, SocketName))
	}}}
}

func TestMetricsText(t *testing.T) {
	_, c, _ := serve(t, newFakeBackend("a.img"))
	text, err := c.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{}
	types := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "# TYPE ") && len(f) == 4 {
			types[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		name, v, ok := strings.Cut(l, " ")
		if !ok || strings.Contains(v, " ") {
			t.Fatalf("bad sample line %q", l)
		}
		values[name] = v
	}
	for name, want := range map[string]string{
		"imgcache_hits_total":              "11",
		"imgcache_misses_total":            "4",
		"imgcache_upstream_bytes_total":    "1048576",
		"imgcache_cache_bytes":             "500",
		"imgcache_index_bytes":             "99",
		"imgcache_queue_length":            "1",
		"imgcache_fetches_in_flight":       "0",
		"imgcache_evictions_total":         "0",
		"imgcache_errors_total":            "0",
		"imgcache_served_bytes_total":      "0",
		`imgcache_images{state="partial"}`: "1",
		`imgcache_images{state="absent"}`:  "0",
		"imgcache_passthrough":             "1",
		"imgcache_max_bytes":               "", // no limit: left out
		"imgcache_pinned_images":           "0",
		"imgcache_opens_total":             "0",
	} {
		if got := values[name]; got != want && !sameNumber(got, want) {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for name, typ := range types {
		if strings.HasSuffix(name, "_total") != (typ == "counter") {
			t.Errorf("%s has type %s", name, typ)
		}
	}
}

// sameNumber: the exposition format writes 1048576 as 1.048576e+06.
func sameNumber(a, b string) bool {
	x, errx := strconv.ParseFloat(a, 64)
	y, erry := strconv.ParseFloat(b, 64)
	return errx == nil && erry == nil && x == y
}

func TestSocketModeCloseAndNotMounted(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := Dial(ctx, dir); !isNotMounted(err, dir) {
		t.Fatalf("Dial with no socket: %v", err)
	}
	s, err := Listen(dir, newFakeBackend(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, SocketName))
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Close: %v", err)
	}

	// A socket left by a daemon that died refuses connections: not
	// mounted. The next daemon replaces it.
	ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Dial(ctx, dir); !isNotMounted(err, dir) {
		t.Fatalf("Dial with a dead socket: %v", err)
	}
	s, err = Listen(dir, newFakeBackend("a.img"), nil)
	if err != nil {
		t.Fatalf("Listen over a dead socket: %v", err)
	}
	defer s.Close()
	c, err := Dial(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Image(ctx, "a.img"); err != nil {
		t.Fatal(err)
	}
}

func isNotMounted(err error, dir string) bool {
	var nm *NotMountedError
	return errors.As(err, &nm) && strings.Contains(err.Error(), "the cache at "+dir+" is not mounted (no daemon on "+dir+"/control.sock)")
}

func TestLongSocketPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := Listen(dir, newFakeBackend("a.img"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Dial(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Image(context.Background(), "a.img"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, SocketName)); err != nil {
		t.Fatal(err)
	}
}

// Pin rules travel as one query parameter, whatever their characters.
func TestPinRuleRoutes(t *testing.T) {
	ctx := context.Background()
	f := newFakeBackend("a.img")
	_, c, _ := serve(t, f)
	rules := []Pin{
		{Kind: PinGlob, Pattern: "images/debian/bookworm/amd64/default/*"},
		{Kind: PinGlob, Pattern: "a?b[c-d]#e f%2F+&g=h\\*"},
		{Kind: PinAlias, Pattern: "debian/12/amd64"},
		{Kind: PinName, Pattern: "with space/c%20d?e#f.img"},
	}
	for _, r := range rules {
		p, err := c.AddPin(ctx, r.Kind, r.Pattern)
		if err != nil || p.Kind != r.Kind || p.Pattern != r.Pattern || p.Images == nil {
			t.Fatalf("AddPin(%s %q): %v %+v", r.Kind, r.Pattern, err, p)
		}
	}
	pins, err := c.Pins(ctx)
	if err != nil || len(pins) != len(rules) {
		t.Fatalf("Pins: %v %+v", err, pins)
	}
	for i, r := range rules {
		if pins[i].Kind != r.Kind || pins[i].Pattern != r.Pattern {
			t.Errorf("Pins()[%d] = %+v, want %+v", i, pins[i], r)
		}
		if _, err := c.RemovePin(ctx, r.Kind, r.Pattern); err != nil {
			t.Errorf("RemovePin(%s %q): %v", r.Kind, r.Pattern, err)
		}
	}
	if _, err := c.RemovePin(ctx, PinGlob, "nonesuch/*"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("RemovePin of no rule: %v, want 404", err)
	}
	if pins, err := c.Pins(ctx); err != nil || pins == nil || len(pins) != 0 {
		t.Errorf("Pins after removing every rule: %v %#v (want [], not null)", err, pins)
	}
	for _, query := range []string{"", "?glob=a&alias=b", "?glob=a&glob=b", "?regexp=x", "?name=../x", "?name=a//b"} {
		for _, method := range []string{"PUT", "DELETE"} {
			if _, err := call[Pin](ctx, c, method, "/v1/pins"+query); !isStatus(err, http.StatusBadRequest) {
				t.Errorf("%s /v1/pins%s: %v, want 400", method, query, err)
			}
		}
	}
	want := []string{}
	for _, r := range rules {
		want = append(want, "add pin "+r.Kind+" "+r.Pattern)
	}
	for _, r := range rules {
		want = append(want, "remove pin "+r.Kind+" "+r.Pattern)
	}
	want = append(want, "remove pin glob nonesuch/*")
	if !slices.Equal(f.calls, want) {
		t.Errorf("backend calls:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
}
