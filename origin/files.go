package origin

import (
	"bytes"
	"fmt"
	"html"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// fileKey identifies a version of a file without reading it: what
// rsync's quick check compares, plus the inode, so that a file replaced
// by rename is a new version even with the same size and mtime. A file
// rewritten in place with its size and mtime restored is not noticed.
type fileKey struct {
	size  int64
	mtime int64 // ns since the epoch
	ino   uint64
}

func keyOf(fi fs.FileInfo) fileKey {
	k := fileKey{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = st.Ino
	}
	return k
}

// etag is the strong validator of a version of a file: served with the
// file and published in the index, so that a cache can send it back in
// If-Range.
func (k fileKey) etag() string {
	return fmt.Sprintf(`"%x-%x-%x"`, k.ino, k.size, k.mtime)
}

func (k fileKey) modTime() time.Time { return time.Unix(0, k.mtime).UTC() }

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	f, err := s.root.Open(name)
	if err != nil {
		s.notFound(w, r, err)
		return
	}
	defer f.Close()
	// Stat the open file, not the name: the validators must be those of
	// the bytes served.
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("ETag", keyOf(fi).etag())
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// dirEntry is a line of a directory listing.
type dirEntry struct {
	name  string
	dir   bool
	size  int64
	mtime time.Time
}

// serveDir lists a directory: its subdirectories and regular files whose
// names are servable. Symbolic links to files inside the root are listed
// as the files; other links are not.
func (s *Server) serveDir(w http.ResponseWriter, r *http.Request, name string) {
	entries, err := fs.ReadDir(s.root.FS(), name)
	if err != nil {
		s.notFound(w, r, err)
		return
	}
	var list []dirEntry
	for _, de := range entries {
		if clean, err := upstream.CleanName(de.Name()); err != nil || clean != de.Name() {
			continue
		}
		fi, err := s.root.Stat(path.Join(name, de.Name())) // follows links, within the root
		if err != nil {
			continue
		}
		switch {
		case fi.IsDir() && de.Type()&fs.ModeSymlink != 0:
			// Not listed, as not indexed: a link to a parent would
			// make every crawler loop.
		case fi.IsDir():
			list = append(list, dirEntry{name: de.Name(), dir: true, mtime: fi.ModTime()})
		case fi.Mode().IsRegular():
			list = append(list, dirEntry{name: de.Name(), size: fi.Size(), mtime: fi.ModTime()})
		}
	}
	slices.SortFunc(list, func(a, b dirEntry) int { return strings.Compare(a.name, b.name) })
	body := listingHTML(r.URL.Path, list)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// listingHTML renders a listing in the shape of nginx's autoindex: one
// <a> per line, the href escaped as a URL path component and then for
// HTML, the text escaped for HTML, and the exact size in bytes.
func listingHTML(urlPath string, list []dirEntry) []byte {
	var b bytes.Buffer
	title := html.EscapeString(urlPath)
	fmt.Fprintf(&b, "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>Index of %s</title></head>\n", title)
	fmt.Fprintf(&b, "<body>\n<h1>Index of %s</h1><hr><pre>\n", title)
	if urlPath != "/" {
		b.WriteString("<a href=\"../\">../</a>\n")
	}
	for _, e := range list {
		href, text, size := url.PathEscape(e.name), e.name, fmt.Sprint(e.size)
		if e.dir {
			href, text, size = href+"/", text+"/", "-"
		}
		fmt.Fprintf(&b, "<a href=\"%s\">%s</a> %s %s\n",
			html.EscapeString(href), html.EscapeString(text), e.mtime.UTC().Format(time.RFC3339), size)
	}
	b.WriteString("</pre><hr></body>\n</html>\n")
	return b.Bytes()
}
