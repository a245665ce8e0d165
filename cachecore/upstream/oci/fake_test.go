package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRegistry is an in-process registry for fault injection: the
// distribution API subset this package uses, with paging, and a hook that
// may answer any request instead.
type fakeRegistry struct {
	mu        sync.Mutex
	tags      map[string]map[string]string // repo: tag: manifest digest
	manifests map[string][]byte            // digest: bytes
	blobs     map[string][]byte            // digest: bytes
	noCatalog bool
	sorted    map[string][]string // repo: its tags in order, until one changes
	// hook, if set, sees every request first; true: it answered.
	hook     func(w http.ResponseWriter, r *http.Request) bool
	requests []string // "METHOD path?query"
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{tags: map[string]map[string]string{}, manifests: map[string][]byte{}, blobs: map[string][]byte{}}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (f *fakeRegistry) blob(b []byte) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digestOf(b)
	f.blobs[d] = b
	return map[string]any{"mediaType": "application/octet-stream", "digest": d, "size": len(b)}
}

// manifest stores the JSON of m (or raw bytes) and returns its digest.
func (f *fakeRegistry) manifest(m any) string {
	b, ok := m.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(m); err != nil {
			panic(err)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digestOf(b)
	f.manifests[d] = b
	return d
}

func (f *fakeRegistry) tag(repo, tag, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tags[repo] == nil {
		f.tags[repo] = map[string]string{}
	}
	f.tags[repo][tag] = digest
	delete(f.sorted, repo)
}

// artifact is an ORAS-style manifest of the layers (each a blob
// descriptor, annotated as the caller likes).
func (f *fakeRegistry) artifact(layers ...map[string]any) map[string]any {
	return map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        f.blob([]byte("{}")),
		"layers":        layers,
	}
}

func titled(d map[string]any, title string) map[string]any {
	d["annotations"] = map[string]string{"org.opencontainers.image.title": title}
	return d
}

func (f *fakeRegistry) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, r := range f.requests {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v2/":
		w.Write([]byte("{}"))
	case p == "/v2/_catalog":
		if f.noCatalog {
			http.Error(w, `{"errors":[{"code":"UNSUPPORTED"}]}`, http.StatusNotFound)
			return
		}
		f.mu.Lock()
		var repos []string
		for repo := range f.tags {
			repos = append(repos, repo)
		}
		f.mu.Unlock()
		f.page(w, r, "repositories", repos)
	case strings.HasSuffix(p, "/tags/list"):
		repo := strings.TrimSuffix(strings.TrimPrefix(p, "/v2/"), "/tags/list")
		f.mu.Lock()
		tags, ok := f.tags[repo]
		list := f.sorted[repo]
		if list == nil {
			for t := range tags {
				list = append(list, t)
			}
			slices.Sort(list)
			if f.sorted == nil {
				f.sorted = map[string][]string{}
			}
			f.sorted[repo] = list
		}
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		f.page(w, r, "tags", list)
	case strings.Contains(p, "/manifests/"):
		i := strings.LastIndex(p, "/manifests/")
		repo, ref := strings.TrimPrefix(p[:i], "/v2/"), p[i+len("/manifests/"):]
		f.mu.Lock()
		if d, ok := f.tags[repo][ref]; ok {
			ref = d
		}
		b, ok := f.manifests[ref]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		var mt struct {
			MediaType string `json:"mediaType"`
		}
		json.Unmarshal(b, &mt)
		w.Header().Set("Content-Type", mt.MediaType)
		w.Header().Set("Docker-Content-Digest", ref)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case strings.Contains(p, "/blobs/"):
		d := p[strings.LastIndex(p, "/")+1:]
		f.mu.Lock()
		b, ok := f.blobs[d]
		f.mu.Unlock()
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		w.Header().Set("Docker-Content-Digest", d)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		http.NotFound(w, r)
	}
}

// page answers a list request with n and last, and a Link to the rest.
func (f *fakeRegistry) page(w http.ResponseWriter, r *http.Request, key string, all []string) {
	if !slices.IsSorted(all) {
		slices.Sort(all)
	}
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i, _ := slices.BinarySearch(all, last)
		for i < len(all) && all[i] <= last {
			i++
		}
		all = all[i:]
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n > 0 && n < len(all) {
		all = all[:n]
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {all[n-1]}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	if all == nil {
		all = []string{}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{key: all})
}

// handlerTransport serves requests from a handler in process: no
// sockets, so tests of 100,000 requests stay quick.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := req.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// newFakeUpstream is an upstream of the fake registry, over a real
// loopback server, logging into the returned buffer.
func newFakeUpstream(t *testing.T, f *fakeRegistry, opts Options) (*Upstream, *syncBuffer) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	u, err := New("oci+http://"+strings.TrimPrefix(srv.URL, "http://"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return u, logs
}
