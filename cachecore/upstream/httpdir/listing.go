package httpdir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// link is one entry of a directory listing.
type link struct {
	name  string    // clean, relative to the upstream's base
	dir   bool      // a subdirectory, to be listed in turn
	size  int64     // -1: unknown (HTML), to be asked with HEAD
	mtime time.Time // zero: unknown
	row   string    // HTML: the listing's text from the link to the end of its line (see known.go)
}

// listing is what one directory listing offers.
type listing struct {
	links   []link
	refused []error // entries whose names cannot be shown
}

// dirRef is a directory being listed: its URL, against which links are
// resolved, and its clean name ("" for the base).
type dirRef struct {
	url  *url.URL
	name string
}

// add cleans the name of an entry of d, given as decoded components
// relative to d, and records it or its refusal.
func (l *listing) add(d dirRef, comps []string, isDir bool, size int64, mtime time.Time, row string) {
	raw := strings.Join(comps, "/")
	if d.name != "" {
		raw = d.name + "/" + raw
	}
	name, err := upstream.CleanName(raw)
	if err != nil {
		l.refused = append(l.refused, err)
		return
	}
	l.links = append(l.links, link{name: name, dir: isDir, size: size, mtime: mtime, row: row})
}

// parseListing parses a listing by what it is: JSON (nginx
// autoindex_format json) or HTML (any server), by Content-Type, else by
// its first byte.
func parseListing(body []byte, header http.Header, d dirRef) (listing, error) {
	mt, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		return parseJSONListing(body, d)
	case mt == "text/html" || mt == "application/xhtml+xml":
		return parseHTMLListing(body, d), nil
	}
	switch first := strings.TrimLeft(string(body[:min(len(body), 512)]), " \t\r\n\ufeff"); {
	case strings.HasPrefix(first, "["):
		return parseJSONListing(body, d)
	case strings.HasPrefix(first, "<"):
		return parseHTMLListing(body, d), nil
	}
	return listing{}, fmt.Errorf("not a directory listing (Content-Type %q)", header.Get("Content-Type"))
}

// jsonEntry is an entry of nginx's autoindex_format json.
type jsonEntry struct {
	Name  string `json:"name"`
	Type  string `json:"type"` // "file", "directory", "other"
	MTime string `json:"mtime"`
	Size  *int64 `json:"size"`
}

// parseJSONListing reads nginx's JSON listing. Its names are plain (not
// escaped) single components; exact sizes and mtimes make HEAD needless.
// The array is decoded an entry at a time into one jsonEntry, with room
// for the links made once: a directory of 250,000 files decoded whole
// held them three times over (the decoded array, the links as they grew,
// and their copies), much of the daemon's peak at a refresh.
func parseJSONListing(body []byte, d dirRef) (listing, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return listing{}, fmt.Errorf("JSON listing: not an array (%v)", errOr(err, tok))
	}
	// Room for an entry per "name" (nginx writes about 90 bytes an
	// entry), bounded by the body's size: a hostile body of "name"s must
	// not reserve ten times itself.
	l := listing{links: make([]link, 0, min(bytes.Count(body, []byte(`"name"`)), len(body)/minJSONEntry))}
	var e jsonEntry
	for dec.More() {
		e = jsonEntry{}
		if err := dec.Decode(&e); err != nil {
			return listing{}, fmt.Errorf("JSON listing: %w", err)
		}
		if strings.Contains(e.Name, "/") {
			l.refused = append(l.refused, fmt.Errorf("JSON listing entry %q: a slash in a listed name", e.Name))
			continue
		}
		mtime, _ := http.ParseTime(e.MTime)
		switch e.Type {
		case "directory":
			l.add(d, []string{e.Name}, true, -1, mtime, "")
		case "file":
			size := int64(-1)
			if e.Size != nil && *e.Size >= 0 {
				size = *e.Size
			}
			l.add(d, []string{e.Name}, false, size, mtime, "")
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return listing{}, fmt.Errorf("JSON listing: the array does not end (%v)", errOr(err, tok))
	}
	if tok, err := dec.Token(); err != io.EOF {
		return listing{}, fmt.Errorf("JSON listing: more after the array (%v)", errOr(err, tok))
	}
	return l, nil
}

// minJSONEntry bounds the room made for a JSON listing's links: fewer
// bytes than a file's entry of nginx's (a name, type, mtime and size:
// about 90), more than a hostile "name" repeated.
const minJSONEntry = 64

// errOr is err, or what was found instead of what was expected.
func errOr(err error, found json.Token) any {
	if err != nil {
		return err
	}
	return fmt.Sprintf("found %v", found)
}

// parseHTMLListing takes the links of an HTML listing that lead below
// the directory d. Links elsewhere (the parent, other sites, sorting
// queries, fragments) are navigation and are skipped without a word; a
// link below d whose name cannot be shown is refused.
func parseHTMLListing(body []byte, d dirRef) listing {
	var l listing
	for _, a := range anchors(string(body)) {
		href := a.href
		rel, ok := relativeHref(href, d.url)
		if !ok {
			continue
		}
		isDir := strings.HasSuffix(rel, "/")
		rel = strings.TrimSuffix(rel, "/")
		if rel == "" {
			continue // the directory itself
		}
		comps, err := unescapeComponents(rel)
		if err != nil {
			l.refused = append(l.refused, fmt.Errorf("link %q: %w", href, err))
			continue
		}
		l.add(d, comps, isDir, -1, time.Time{}, a.row)
	}
	return l
}

// relativeHref returns the escaped path of href relative to the directory
// dir, if href leads below dir.
func relativeHref(href string, dir *url.URL) (string, bool) {
	href = strings.TrimSpace(href)
	if i := strings.IndexByte(href, '#'); i >= 0 {
		href = href[:i]
	}
	if href == "" || strings.ContainsRune(href, '?') {
		return "", false
	}
	if hasScheme(href) || strings.HasPrefix(href, "//") {
		u, err := url.Parse(href)
		if err != nil || u.Scheme != dir.Scheme && u.Scheme != "" || !strings.EqualFold(u.Host, dir.Host) {
			return "", false
		}
		href = u.EscapedPath()
	}
	if strings.HasPrefix(href, "/") {
		return belowPath(href, dir.EscapedPath())
	}
	for strings.HasPrefix(href, "./") {
		href = href[2:]
	}
	if href == ".." || strings.HasPrefix(href, "../") {
		return "", false
	}
	return href, true
}

// belowPath returns the part of the escaped absolute path p below the
// escaped directory path dir, comparing decoded components (servers do
// not all escape the same characters).
func belowPath(p, dir string) (string, bool) {
	dirComps := strings.Split(strings.TrimSuffix(dir, "/"), "/")
	comps := strings.Split(p, "/")
	if len(comps) <= len(dirComps) {
		return "", false
	}
	for i, dc := range dirComps {
		a, err1 := url.PathUnescape(dc)
		b, err2 := url.PathUnescape(comps[i])
		if err1 != nil || err2 != nil || a != b {
			return "", false
		}
	}
	return strings.Join(comps[len(dirComps):], "/"), true
}

// hasScheme reports whether href starts with an RFC 3986 scheme and a
// colon ("http:", "mailto:"), which makes it an absolute URL. Listing
// servers escape or "./"-prefix a colon in a relative name for this
// reason.
func hasScheme(href string) bool {
	for i := 0; i < len(href); i++ {
		c := href[i]
		switch {
		case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case c == ':':
			return i > 0
		default:
			return false
		}
	}
	return false
}

// unescapeComponents percent-decodes each component of an escaped
// relative path. An escaped slash inside a component is refused: the name
// would be split differently than the server meant.
func unescapeComponents(rel string) ([]string, error) {
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		dec, err := url.PathUnescape(c)
		if err != nil {
			return nil, err
		}
		if strings.Contains(dec, "/") {
			return nil, fmt.Errorf("escaped slash in %q", c)
		}
		comps[i] = dec
	}
	return comps, nil
}

// anchor is an <a> element of an HTML listing: its href, entities
// decoded, and its row: the text after its start tag up to the end of the
// line (at most maxRow bytes), where nginx and Apache show the file's
// date and size.
type anchor struct {
	href, row string
}

const maxRow = 512

// anchors returns every <a> element of an HTML document that has an
// href. It is a small scanner, not a parser: listings are simple and
// generated, and whatever it returns is checked as a link anyway.
// Comments are skipped; quoted attribute values may hold '>'.
func anchors(doc string) []anchor {
	var out []anchor
	for i := 0; i < len(doc); {
		lt := strings.IndexByte(doc[i:], '<')
		if lt < 0 {
			break
		}
		i += lt + 1
		if strings.HasPrefix(doc[i:], "!--") {
			end := strings.Index(doc[i+3:], "-->")
			if end < 0 {
				break
			}
			i += 3 + end + 3
			continue
		}
		j := i
		for j < len(doc) && isNameByte(doc[j]) {
			j++
		}
		if j == i && i < len(doc) && doc[i] != '/' && doc[i] != '!' && doc[i] != '?' {
			continue // a '<' in text, not a tag
		}
		tag := doc[i:j]
		attrs, next := scanAttrs(doc, j)
		i = next
		if strings.EqualFold(tag, "a") {
			if h, ok := attrs["href"]; ok {
				row := doc[i:min(len(doc), i+maxRow)]
				if nl := strings.IndexByte(row, '\n'); nl >= 0 {
					row = row[:nl]
				}
				out = append(out, anchor{href: html.UnescapeString(h), row: row})
			}
		}
	}
	return out
}

// scanAttrs reads the attributes of a tag from doc[i:] up to its '>',
// returning them (names lowercased, first one wins) and the index after
// the tag.
func scanAttrs(doc string, i int) (map[string]string, int) {
	attrs := map[string]string{}
	for {
		for i < len(doc) && (isSpace(doc[i]) || doc[i] == '/') {
			i++
		}
		if i >= len(doc) {
			return attrs, i
		}
		if doc[i] == '>' {
			return attrs, i + 1
		}
		j := i
		for j < len(doc) && !isSpace(doc[j]) && doc[j] != '=' && doc[j] != '>' && doc[j] != '/' {
			j++
		}
		if j == i { // a stray '=': skip it
			j++
		}
		name := strings.ToLower(doc[i:j])
		i = j
		for i < len(doc) && isSpace(doc[i]) {
			i++
		}
		value := ""
		if i < len(doc) && doc[i] == '=' {
			value, i = scanValue(doc, i+1)
		}
		if _, dup := attrs[name]; !dup {
			attrs[name] = value
		}
	}
}

// scanValue reads an attribute value, quoted or not, from doc[i:].
func scanValue(doc string, i int) (string, int) {
	for i < len(doc) && isSpace(doc[i]) {
		i++
	}
	if i < len(doc) && (doc[i] == '"' || doc[i] == '\'') {
		q := doc[i]
		end := strings.IndexByte(doc[i+1:], q)
		if end < 0 {
			return doc[i+1:], len(doc)
		}
		return doc[i+1 : i+1+end], i + 1 + end + 1
	}
	j := i
	for j < len(doc) && !isSpace(doc[j]) && doc[j] != '>' {
		j++
	}
	return doc[i:j], j
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == ':'
}
