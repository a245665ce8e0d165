package index

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Records are decoded by hand when they are as json.Marshal writes a
// Record of an image nothing much has happened to: known keys only, no
// whitespace, no escapes, no Extra. encoding/json took 5 of the 10 CPU
// seconds of a start-up of a million records, by reflection, and left a
// few hundred bytes of garbage a record. Anything else (an escape, an
// Extra, a key of another spelling, null, a number json would refuse)
// is handed to json.Unmarshal, so that a record decodes to exactly what
// json.Unmarshal makes of it, or fails as it does.

// decodeRecord decodes v into r, which must be the zero Record.
func decodeRecord(v []byte, r *Record) error {
	if fastRecord(v, r) {
		return nil
	}
	*r = Record{}
	return json.Unmarshal(v, r)
}

// fastRecord decodes v into r if v is a record of the plain form; else
// it reports false, with r changed.
func fastRecord(v []byte, r *Record) bool {
	p := recordParser{b: v}
	if !p.skip('{') {
		return false
	}
	if p.skip('}') {
		return p.i == len(p.b)
	}
	for {
		key, ok := p.raw()
		if !ok || !p.skip(':') {
			return false
		}
		switch string(key) {
		case "id":
			r.ID, ok = p.str()
		case "name":
			r.Name, ok = p.str()
		case "size":
			r.Size, ok = p.int()
		case "mtime":
			ok = p.time(&r.ModTime)
		case "etag":
			r.ETag, ok = p.str()
		case "digest":
			r.Digest, ok = p.str()
		case "chunk_size":
			r.ChunkSize, ok = p.int()
		case "listed":
			r.Listed, ok = p.bool()
		case "verdict":
			var s string
			s, ok = p.str()
			r.Verdict = Verdict(s)
		case "hits":
			r.Hits, ok = p.uint()
		case "last_access":
			ok = p.time(&r.LastAccess)
		case "last_error":
			r.LastError, ok = p.str()
		case "last_error_at":
			ok = p.time(&r.LastErrorAt)
		case "added":
			ok = p.time(&r.Added)
		case "pinned":
			r.Pinned, ok = p.bool()
		case "by_digest":
			r.ByDigest, ok = p.bool()
		case "content":
			r.Content, ok = p.bool()
		case "queued_at":
			ok = p.time(&r.QueuedAt)
		case "last_fetch":
			ok = p.time(&r.LastFetch)
		default: // "extra", or a key json would match some other way
			return false
		}
		switch {
		case !ok:
			return false
		case p.skip(','):
		case p.skip('}'):
			return p.i == len(p.b)
		default:
			return false
		}
	}
}

// recordParser reads the plain form of a record (fastRecord).
type recordParser struct {
	b []byte
	i int
}

func (p *recordParser) skip(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// raw reads a string with no escapes, and returns its bytes (in b):
// valid UTF-8 with no control characters, which json reads as they are.
func (p *recordParser) raw() ([]byte, bool) {
	if !p.skip('"') {
		return nil, false
	}
	start := p.i
	ascii := true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (p *recordParser) str() (string, bool) {
	s, ok := p.raw()
	return string(s), ok
}

// digits reads a number of the form -?(0|[1-9][0-9]*) followed by
// neither a fraction nor an exponent (json refuses those for an
// integer field: the slow path says so).
func (p *recordParser) digits(signed bool) ([]byte, bool) {
	start := p.i
	if signed {
		p.skip('-')
	}
	first := p.i
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
	switch n := p.i - first; {
	case n == 0, n > 1 && p.b[first] == '0':
		return nil, false
	}
	return p.b[start:p.i], true
}

func (p *recordParser) int() (int64, bool) {
	d, ok := p.digits(true)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(d), 10, 64) // no allocation: the conversion does not escape
	return n, err == nil
}

func (p *recordParser) uint() (uint64, bool) {
	d, ok := p.digits(false)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(string(d), 10, 64)
	return n, err == nil
}

func (p *recordParser) bool() (bool, bool) {
	rest := p.b[p.i:]
	switch {
	case len(rest) >= 4 && string(rest[:4]) == "true":
		p.i += 4
		return true, true
	case len(rest) >= 5 && string(rest[:5]) == "false":
		p.i += 5
		return false, true
	}
	return false, false
}

// time reads a time as time.Time.UnmarshalJSON does, from the string
// with its quotes.
func (p *recordParser) time(t *time.Time) bool {
	start := p.i
	if _, ok := p.raw(); !ok {
		return false
	}
	return t.UnmarshalJSON(p.b[start:p.i]) == nil
}
