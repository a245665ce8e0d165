package upstream

import "io"

// WholeReader is implemented by the reader Fetch returns when its reply
// may carry more than the range asked for: a server that ignores Range
// (python's http.server, some appliances and object-store gateways)
// answers 200 with the whole image, and so does a pull-through registry
// for a blob it has not cached yet. Read yields the range asked for all
// the same, throwing the bytes before and after it away; a caller that
// would rather keep them (a cache stores every chunk the reply carries,
// so that the server sends each byte once, not once per range) calls
// ReadWhole before its first Read.
type WholeReader interface {
	io.ReadCloser
	// ReadWhole reports whether the reply carries the whole image; if it
	// does, Read yields all of it, [0, e.Size), instead of the range,
	// with the same checks (io.EOF after exactly e.Size bytes,
	// ErrShortBody if it ends early). Called after the first Read, or
	// on a reply that is the range, it changes nothing and reports
	// false.
	ReadWhole() bool
}

// ReadWhole is r.ReadWhole if r is a WholeReader, else false.
func ReadWhole(r io.Reader) bool {
	w, ok := r.(WholeReader)
	return ok && w.ReadWhole()
}
