package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
	"golang.org/x/sync/errgroup"
)

// serveIndex answers with the httpdir.Index of the tree as it is now.
// The walk is done for every request (it only reads directories); the
// files new or changed since the last one are hashed before the answer.
func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	idx, err := s.buildIndex(r.Context())
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Error("origin: index failed", "err", err)
		}
		http.Error(w, "index failed", http.StatusInternalServerError)
		return
	}
	body, err := json.Marshal(idx)
	if err != nil {
		http.Error(w, "index failed", http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// walkedFile is a file the walk found, with the version it saw.
type walkedFile struct {
	name string
	key  fileKey
}

// buildIndex walks the tree and hashes what needs it.
func (s *Server) buildIndex(ctx context.Context) (httpdir.Index, error) {
	files, err := s.walk(ctx)
	if err != nil {
		return httpdir.Index{}, err
	}
	images := make([]httpdir.IndexImage, len(files))
	ok := make([]bool, len(files))
	var g errgroup.Group
	g.SetLimit(s.hashes.workers) // more would only wait for a hashing slot
	for i, f := range files {
		if ctx.Err() != nil {
			break
		}
		g.Go(func() error {
			images[i], ok[i] = s.indexImage(ctx, f)
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return httpdir.Index{}, err
	}
	idx := httpdir.Index{Version: httpdir.IndexVersion, Images: []httpdir.IndexImage{}}
	seen := make(map[string]bool, len(files))
	for i, im := range images {
		if ok[i] {
			idx.Images = append(idx.Images, im)
			seen[im.Name] = true
		}
	}
	s.hashes.forget(seen)
	return idx, nil
}

// indexImage hashes one file (or finds its hash); a file that vanished or
// is being written is left out of this index, and logged.
func (s *Server) indexImage(ctx context.Context, f walkedFile) (httpdir.IndexImage, bool) {
	h, err := s.hashes.sum(ctx, f.name, f.key)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("origin: file left out of the index", "name", f.name, "err", err)
		}
		return httpdir.IndexImage{}, false
	}
	return httpdir.IndexImage{
		Name:    f.name,
		Size:    h.key.size,
		SHA256:  h.sum,
		ModTime: h.key.modTime(),
		ETag:    h.key.etag(),
	}, true
}

// walk lists the regular files below the root whose names may be served,
// sorted. Symbolic links to files are followed if they stay inside the
// root; links to directories are not (a loop would never end).
// Unreadable directories are logged and skipped.
func (s *Server) walk(ctx context.Context) ([]walkedFile, error) {
	var files []walkedFile
	err := fs.WalkDir(s.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			s.log.Warn("origin: not indexed", "name", name, "err", err)
			return nil // skips the directory
		}
		if name == "." {
			return nil
		}
		if clean, err := upstream.CleanName(name); err != nil || clean != name {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if strings.Count(name, "/")+1 >= upstream.MaxNameDepth {
				return fs.SkipDir // its files' names would be too deep
			}
			return nil
		}
		fi, err := s.root.Stat(name) // follows a link, within the root
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("origin: not indexed", "name", name, "err", err)
			}
			return nil
		}
		if fi.Mode().IsRegular() {
			files = append(files, walkedFile{name: name, key: keyOf(fi)})
		}
		return nil
	})
	slices.SortFunc(files, func(a, b walkedFile) int { return strings.Compare(a.name, b.name) })
	return files, err
}
