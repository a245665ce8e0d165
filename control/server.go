package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Server serves the API of one cache on its control socket.
type Server struct {
	b    Backend
	log  *slog.Logger
	path string // the socket's path
	http *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve returns
}

// Listen creates the control socket in cacheDir (mode 0600) and starts
// serving b on it. The caller must hold the cache directory's lock: a
// socket left by a daemon that died is removed first. Close stops the
// server and removes the socket.
func Listen(cacheDir string, b Backend, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(cacheDir, SocketName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := listenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The cache directory is 0700 already; the socket's own mode makes
	// the rule explicit should the directory ever be opened up.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{b: b, log: log, path: path, ln: ln, done: make(chan struct{})}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control socket", "err", err)
		}
	}()
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting requests, gives those running a moment to end,
// and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	<-s.done
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Handler is the API's HTTP handler; Listen serves it on the socket.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// {name...} takes the rest of the path, unescaped: names with '/'
	// (images in subdirectories) are paths under the route.
	mux.HandleFunc("GET /v1/images", s.listImages)
	mux.HandleFunc("GET /v1/images/{name...}", s.named(s.getImage))
	mux.HandleFunc("DELETE /v1/images", s.evictAll)
	mux.HandleFunc("DELETE /v1/images/{name...}", s.named(s.evict))
	mux.HandleFunc("GET /v1/queue", s.listQueue)
	mux.HandleFunc("PUT /v1/queue/{name...}", s.named(s.queue))
	mux.HandleFunc("DELETE /v1/queue/{name...}", s.named(s.dequeue))
	mux.HandleFunc("GET /v1/pins", s.listPins)
	mux.HandleFunc("PUT /v1/pins", s.ruled(s.b.AddPin)) // ?glob=, ?alias= or ?name=
	mux.HandleFunc("DELETE /v1/pins", s.ruled(s.b.RemovePin))
	mux.HandleFunc("PUT /v1/pins/{name...}", s.named(s.pin))
	mux.HandleFunc("DELETE /v1/pins/{name...}", s.named(s.unpin))
	mux.HandleFunc("POST /v1/prune", s.prune)
	mux.HandleFunc("POST /v1/clean", s.clean)
	mux.HandleFunc("POST /v1/verify", func(w http.ResponseWriter, r *http.Request) { s.verify(w, r, "") }) // every image
	mux.HandleFunc("POST /v1/verify/{name...}", s.named(s.verify))
	mux.HandleFunc("GET /v1/stats", s.stats)
	mux.Handle("GET /metrics", metricsHandler(s.b, s.log))
	// Go's profiler, for "go tool pprof" through the socket: as private
	// as the rest of the API.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return jsonMisses(mux)
}

// named adapts the handler of a route about one image (or directory):
// it gets the {name...} of the request if the backend says the catalog
// could hold that name as it is. Anything else ("../x", "a//b", a
// control character) is answered 400, saying why, rather than ending in
// a 404 of some other path.
func (s *Server) named(h func(w http.ResponseWriter, r *http.Request, name string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if err := s.b.CheckName(name); err != nil {
			s.answer(w, r, nil, WithKind(err, ErrBadName))
			return
		}
		h(w, r, name)
	}
}

// listImages streams the images of the catalog, a JSON array written as
// the walk of the catalog goes, one image to a line, so that neither
// side holds a listing of a million images whole: ?prefix=P keeps the
// images whose names start with P, ?limit=N the first N (0: all). A
// client that goes away stops the walk.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			reply(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("limit %q: want a whole number of images (0: all)", v)})
			return
		}
		limit = n
	}
	w.Header().Set("Content-Type", "application/json")
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	sep, n := "[", 0
	for img := range s.b.Images(q.Get("prefix")) {
		bw.WriteString(sep)
		if enc.Encode(img) != nil { // the client went away (a write failed)
			return
		}
		sep, n = ",", n+1
		if n == limit {
			break
		}
	}
	if n == 0 {
		bw.WriteString("[")
	}
	bw.WriteString("]\n")
	bw.Flush()
}

func (s *Server) getImage(w http.ResponseWriter, r *http.Request, name string) {
	img, err := s.b.Image(name)
	s.answer(w, r, img, err)
}

func (s *Server) evict(w http.ResponseWriter, r *http.Request, name string) {
	res, err := s.b.Evict(name)
	s.answer(w, r, res, err)
}

func (s *Server) evictAll(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.EvictAll()
	s.answer(w, r, res, err)
}

func (s *Server) listQueue(w http.ResponseWriter, r *http.Request) {
	q := s.b.Queued()
	if q == nil {
		q = []string{}
	}
	reply(w, http.StatusOK, q)
}

func (s *Server) queue(w http.ResponseWriter, r *http.Request, name string) {
	img, err := s.b.Queue(name)
	s.answer(w, r, img, err)
}

func (s *Server) dequeue(w http.ResponseWriter, r *http.Request, name string) {
	img, err := s.b.Dequeue(name)
	s.answer(w, r, img, err)
}

func (s *Server) listPins(w http.ResponseWriter, r *http.Request) {
	pins := s.b.Pins()
	if pins == nil {
		pins = []Pin{}
	}
	reply(w, http.StatusOK, pins)
}

// ruled adapts the handler of a route about one pin rule, given as the
// one query parameter glob=, alias= or name=.
func (s *Server) ruled(h func(kind, pattern string) (Pin, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if len(q) != 1 {
			s.answer(w, r, nil, WithKind(errors.New("want one of glob=, alias= or name="), ErrBadName))
			return
		}
		for kind, vs := range q {
			if kind != PinName && kind != PinGlob && kind != PinAlias || len(vs) != 1 {
				s.answer(w, r, nil, WithKind(fmt.Errorf("%q: want one of glob=, alias= or name=", kind), ErrBadName))
				return
			}
			if kind == PinName {
				if err := s.b.CheckName(vs[0]); err != nil {
					s.answer(w, r, nil, WithKind(err, ErrBadName))
					return
				}
			}
			pin, err := h(kind, vs[0])
			s.answer(w, r, pin, err)
		}
	}
}

func (s *Server) pin(w http.ResponseWriter, r *http.Request, name string) {
	img, err := s.b.Pin(name, true)
	s.answer(w, r, img, err)
}

func (s *Server) unpin(w http.ResponseWriter, r *http.Request, name string) {
	img, err := s.b.Pin(name, false)
	s.answer(w, r, img, err)
}

func (s *Server) prune(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.Prune(r.Context())
	s.answer(w, r, res, err)
}

func (s *Server) clean(w http.ResponseWriter, r *http.Request) {
	res, err := s.b.Clean(r.Context())
	s.answer(w, r, res, err)
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request, name string) {
	res, err := s.b.Verify(r.Context(), name)
	s.answer(w, r, res, err)
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	reply(w, http.StatusOK, s.b.Stats())
}

// answer replies with v, or with err as a JSON error whose status says
// what kind of failure it is.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err == nil {
		reply(w, http.StatusOK, v)
		return
	}
	code := statusOf(err)
	if code == http.StatusInternalServerError {
		s.log.Warn("control request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	reply(w, code, apiError{Error: err.Error()})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) // compact: a third of the cost of a long list was indenting
}

// jsonMisses answers requests that match no route (404) or a route with
// another method (405) with a JSON error, like every other error.
func jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}}
		mux.ServeHTTP(probe, r)
		switch probe.code {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", probe.header.Get("Allow"))
			reply(w, probe.code, apiError{Error: fmt.Sprintf("method %s not allowed on %s (allowed: %s)",
				r.Method, r.URL.Path, probe.header.Get("Allow"))})
		case http.StatusNotFound:
			reply(w, probe.code, apiError{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
		default: // a redirect to the cleaned path, ...
			for k, v := range probe.header {
				w.Header()[k] = v
			}
			w.WriteHeader(probe.code)
		}
	})
}

// statusProbe records the status and headers of a reply and drops its body.
type statusProbe struct {
	header http.Header
	code   int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.code == 0 {
		p.code = http.StatusOK
	}
	return len(b), nil
}
func (p *statusProbe) WriteHeader(code int) {
	if p.code == 0 {
		p.code = code
	}
}
