package origin

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// AccessRecord is one line of the access log: a JSON object per line,
// so that names with spaces or quotes need no escaping rules of their
// own, and tests can sum the bytes served per path.
type AccessRecord struct {
	Time   time.Time `json:"time"`   // when the request arrived
	Remote string    `json:"remote"` // client address
	Method string    `json:"method"`
	Path   string    `json:"path"`            // URL path, decoded
	Range  string    `json:"range,omitempty"` // the Range header, as sent
	Status int       `json:"status"`
	Bytes  int64     `json:"bytes"` // body bytes written to the connection
	Millis float64   `json:"ms"`    // time to serve
}

// accessLog writes records to w, one Write per line.
type accessLog struct {
	mu sync.Mutex // serializes lines
	w  io.Writer
}

func (l *accessLog) write(rec AccessRecord) {
	b, err := json.Marshal(rec)
	if err != nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(append(b, '\n'))
}

// start wraps w to count what the handler sends.
func (l *accessLog) start(w http.ResponseWriter, r *http.Request) *recorder {
	return &recorder{ResponseWriter: w, log: l, head: r.Method == http.MethodHead, rec: AccessRecord{
		Time:   time.Now(),
		Remote: r.RemoteAddr,
		Method: r.Method,
		Path:   r.URL.Path,
		Range:  r.Header.Get("Range"),
	}}
}

// recorder is the ResponseWriter handlers see when there is an access
// log. It implements io.ReaderFrom so that http.ServeContent still sends
// files with sendfile.
type recorder struct {
	http.ResponseWriter
	log  *accessLog
	head bool // HEAD: net/http discards the body, so none is counted
	rec  AccessRecord
}

func (w *recorder) WriteHeader(code int) {
	if w.rec.Status == 0 {
		w.rec.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	w.wrote()
	n, err := w.ResponseWriter.Write(p)
	w.count(n)
	return n, err
}

func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	w.wrote()
	n, err := io.Copy(w.ResponseWriter, r)
	w.count(int(n))
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) wrote() {
	if w.rec.Status == 0 {
		w.rec.Status = http.StatusOK
	}
}

func (w *recorder) count(n int) {
	if !w.head {
		w.rec.Bytes += int64(n)
	}
}

func (w *recorder) finish() {
	if w.rec.Status == 0 { // the handler wrote nothing
		w.rec.Status = http.StatusOK
	}
	w.rec.Millis = float64(time.Since(w.rec.Time).Microseconds()) / 1000
	w.log.write(w.rec)
}
