// Package origin is imgcache's own image server (imgcache serve DIR): it
// serves the files of a directory over HTTP in the way the httpdir
// upstream reads best.
//
//   - GET and HEAD of a file, with single and multiple ranges, a strong
//     ETag, Last-Modified and the conditional headers (If-Range,
//     If-None-Match, If-Modified-Since...), by http.ServeContent.
//   - GET of a directory: an HTML listing like nginx's autoindex, so that
//     browsers and other clients can look around.
//   - GET of /.imgcache/index.json: the httpdir.Index of every image below
//     DIR with its sha256, so that a cache gets the whole catalog, with
//     digests, in one request.
//
// The ETag is made from the file's size, mtime and inode, never from its
// content, so that serving a file never means reading it whole. Digests
// are computed for the index only, once per version of a file (see
// hashCache).
//
// Only names that upstream.CleanName accepts unchanged are served or
// listed: no dotfiles, no control characters, nothing above DIR. All file
// access goes through an os.Root, which also keeps symbolic links from
// leading out of DIR (and refuses absolute ones).
package origin

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

// Options tune a Server; the zero value is ready to use.
type Options struct {
	// AccessLog receives one JSON line (an AccessRecord) per request;
	// nil: no access log.
	AccessLog io.Writer
	// Logger receives files left out of the index and other oddities;
	// nil: discard.
	Logger *slog.Logger
	// HashWorkers caps the files hashed at once, across all requests;
	// 0: GOMAXPROCS.
	HashWorkers int
}

// Server serves the images of one directory. It is an http.Handler.
type Server struct {
	root   *os.Root
	log    *slog.Logger
	hashes *hashCache
	access *accessLog // nil: no access log
}

// New returns a server of the files below dir.
func New(dir string, opts Options) (*Server, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HashWorkers <= 0 {
		opts.HashWorkers = runtime.GOMAXPROCS(0)
	}
	s := &Server{root: root, log: opts.Logger, hashes: newHashCache(root, opts.HashWorkers)}
	if opts.AccessLog != nil {
		s.access = &accessLog{w: opts.AccessLog}
	}
	return s, nil
}

// Close stops the hashing of files for the index, waits for it, and
// releases the directory. Requests after Close fail; Close should come
// after the http.Server's Shutdown.
func (s *Server) Close() error {
	s.hashes.close()
	return s.root.Close()
}

// indexURLPath is where the index is served.
const indexURLPath = "/" + httpdir.IndexPath

// ServeHTTP serves a file, a directory listing or the index.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.access != nil {
		rec := s.access.start(w, r)
		defer rec.finish()
		w = rec
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "only GET and HEAD", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == indexURLPath {
		s.serveIndex(w, r)
		return
	}
	name, isDir, ok := requestName(r.URL.Path)
	if !ok || strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
		// An escaped slash would be a second URL of a nested file.
		http.NotFound(w, r)
		return
	}
	fi, err := s.root.Stat(name)
	switch {
	case err != nil:
		s.notFound(w, r, err)
	case fi.IsDir() && !isDir:
		// Relative links in the listing need the slash.
		http.Redirect(w, r, r.URL.EscapedPath()+"/", http.StatusMovedPermanently)
	case fi.IsDir():
		s.serveDir(w, r, name)
	case fi.Mode().IsRegular() && !isDir:
		s.serveFile(w, r, name)
	default: // devices, fifos, sockets; a file asked for as a directory
		http.NotFound(w, r)
	}
}

// requestName turns a request path into the name of a file or directory
// below the root ("." for the root itself), if it is one that may be
// served: the path must be exactly what CleanName makes of it, so there
// is one URL per file, and no dotfile, control character, ".." or
// backslash.
func requestName(urlPath string) (name string, isDir, ok bool) {
	p, ok := strings.CutPrefix(urlPath, "/")
	if !ok {
		return "", false, false
	}
	if p == "" {
		return ".", true, true
	}
	p, isDir = strings.CutSuffix(p, "/")
	if clean, err := upstream.CleanName(p); err != nil || clean != p {
		return "", false, false
	}
	return p, isDir, true
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, os.ErrNotExist) {
		// Escaping symlinks, permissions: the client only learns "no".
		s.log.Warn("origin: not served", "path", r.URL.Path, "err", err)
	}
	http.NotFound(w, r)
}
