package origin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// indexedNames are the names the index of the test tree must have:
// testFiles and the link to a file inside the tree.
func indexedNames() []string {
	var names []string
	for name := range testFiles {
		names = append(names, name)
	}
	names = append(names, "link.img")
	sort.Strings(names)
	return names
}

func getIndex(t *testing.T, url string) httpdir.Index {
	t.Helper()
	resp, body := get(t, url+"/.imgcache/index.json")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("index: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	var idx httpdir.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func TestIndex(t *testing.T) {
	dir := newTree(t)
	_, srv := newTestServer(t, dir, Options{})
	idx := getIndex(t, srv.URL)
	if idx.Version != httpdir.IndexVersion {
		t.Errorf("version %d", idx.Version)
	}
	var names []string
	for _, im := range idx.Images {
		names = append(names, im.Name)
		size, ok := testFiles[im.Name]
		content := fileContent(im.Name, size)
		if !ok { // link.img
			content = fileContent("a.img", testFiles["a.img"])
		}
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(im.Name)))
		if err != nil {
			t.Fatal(err)
		}
		if im.Size != int64(len(content)) || im.SHA256 != sha(content) || !im.ModTime.Equal(fi.ModTime()) {
			t.Errorf("%s: size %d, sha256 %s, mtime %v; want %d, %s, %v", im.Name, im.Size, im.SHA256, im.ModTime, len(content), sha(content), fi.ModTime())
		}
		resp, _ := do(t, "HEAD", srv.URL+"/"+escapeName(im.Name))
		if im.ETag == "" || resp.Header.Get("ETag") != im.ETag {
			t.Errorf("%s: index ETag %s, served %s", im.Name, im.ETag, resp.Header.Get("ETag"))
		}
	}
	if want := indexedNames(); !slices.Equal(names, want) {
		t.Errorf("index names %q\nwant %q", names, want)
	}
	if resp, body := do(t, "HEAD", srv.URL+"/.imgcache/index.json"); resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength <= 0 {
		t.Errorf("HEAD of the index: %s, %d", resp.Status, resp.ContentLength)
	}
}

func escapeName(name string) string {
	comps := strings.Split(name, "/")
	for i, c := range comps {
		comps[i] = url.PathEscape(c)
	}
	return strings.Join(comps, "/")
}

func TestIndexHashesEachVersionOnce(t *testing.T) {
	dir := newTree(t)
	s, srv := newTestServer(t, dir, Options{})
	n := int64(len(indexedNames()))

	// Concurrent first requests: each file is hashed once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { getIndex(t, srv.URL) })
	}
	wg.Wait()
	if got := s.hashes.hashed.Load(); got != n {
		t.Errorf("%d files hashed by concurrent requests, want %d (one per file)", got, n)
	}
	getIndex(t, srv.URL)
	if got := s.hashes.hashed.Load(); got != n {
		t.Errorf("%d files hashed after another request, want still %d", got, n)
	}

	// A changed file is hashed again, and only it.
	p := filepath.Join(dir, "sub", "b.img")
	changed := []byte("new content of b")
	if err := os.WriteFile(p, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, time.Now(), time.Now().Add(time.Minute))
	idx := getIndex(t, srv.URL)
	if got := s.hashes.hashed.Load(); got != n+1 {
		t.Errorf("%d files hashed after one changed, want %d", got, n+1)
	}
	i := slices.IndexFunc(idx.Images, func(im httpdir.IndexImage) bool { return im.Name == "sub/b.img" })
	if i < 0 || idx.Images[i].SHA256 != sha(changed) || idx.Images[i].Size != int64(len(changed)) {
		t.Errorf("changed file in the index: %+v", idx.Images[i])
	}

	// A removed file leaves the index and the cache.
	os.Remove(p)
	idx = getIndex(t, srv.URL)
	if slices.ContainsFunc(idx.Images, func(im httpdir.IndexImage) bool { return im.Name == "sub/b.img" }) {
		t.Error("removed file still indexed")
	}
	s.hashes.mu.Lock()
	_, cached := s.hashes.sums["sub/b.img"]
	s.hashes.mu.Unlock()
	if cached {
		t.Error("removed file's hash still cached")
	}
}

func TestIndexWaiterGoingAwayDoesNotFailOthers(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("x"), 64<<20)
	os.WriteFile(filepath.Join(dir, "big.img"), big, 0o644)
	s, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Every hashing slot held: the flight waits for one, however loaded
	// the machine, until the waiter has gone.
	slots := int64(s.hashes.workers)
	if err := s.hashes.sem.Acquire(context.Background(), slots); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := s.buildIndex(ctx)
		done <- err
	}()
	waitForFlight(t, s)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled index: %v", err)
	}
	s.hashes.sem.Release(slots)
	idx, err := s.buildIndex(context.Background())
	if err != nil || len(idx.Images) != 1 || idx.Images[0].SHA256 != sha(big) {
		t.Errorf("index after a cancelled one: %+v, %v", idx, err)
	}
	if n := s.hashes.hashed.Load(); n != 1 {
		t.Errorf("hashed %d times; the flight should have gone on for the next request", n)
	}
}

func TestCloseStopsHashing(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.img"), bytes.Repeat([]byte("x"), 64<<20), 0o644)
	s, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	slots := int64(s.hashes.workers) // held: the flight is still waiting for one at Close
	if err := s.hashes.sem.Acquire(context.Background(), slots); err != nil {
		t.Fatal(err)
	}
	defer s.hashes.sem.Release(slots)
	go s.buildIndex(context.Background())
	waitForFlight(t, s)
	s.Close() // stops the flight and waits for it
	if s.hashes.flying.Load() != 0 {
		t.Error("a flight outlived Close")
	}
}

func waitForFlight(t *testing.T, s *Server) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if s.hashes.flying.Load() > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no file is being hashed")
}

// TestHttpdirAgainstOrigin is the whole way from an origin to a cache's
// upstream: the catalog with digests in one request, and ranges checked.
func TestHttpdirAgainstOrigin(t *testing.T) {
	dir := newTree(t)
	var log syncBuffer
	_, srv := newTestServer(t, dir, Options{AccessLog: &log})
	up, err := httpdir.New(srv.URL, httpdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := up.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
		content := fileContent(e.Name, testFiles[e.Name])
		if e.Name == "link.img" {
			content = fileContent("a.img", testFiles["a.img"])
		}
		if e.Digest != "sha256:"+sha(content) || e.Size != int64(len(content)) || e.ETag == "" {
			t.Errorf("%s: %+v", e.Name, e)
		}
		for _, r := range [][2]int64{{0, e.Size}, {e.Size / 3, e.Size / 2}} {
			if r[1] == 0 {
				continue
			}
			rc, err := up.Fetch(context.Background(), e, r[0], r[1])
			if err != nil {
				t.Fatalf("Fetch %s %v: %v", e.Name, r, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, content[r[0]:r[0]+r[1]]) {
				t.Errorf("Fetch %s %v: %d bytes, %v", e.Name, r, len(got), err)
			}
		}
	}
	if want := indexedNames(); !slices.Equal(names, want) {
		t.Errorf("catalog %q\nwant %q", names, want)
	}
	if c := bytes.Count([]byte(log.String()), []byte(`"path":"/.imgcache/index.json"`)); c != 1 {
		t.Errorf("%d index requests; the catalog should take one", c)
	}

	// The file changes after the listing: the cache is told, never
	// handed bytes of the new version as the old.
	e := entries[slices.IndexFunc(entries, func(e upstream.Entry) bool { return e.Name == "a.img" })]
	p := filepath.Join(dir, "a.img")
	os.WriteFile(p, bytes.Repeat([]byte("y"), 1000), 0o644)
	os.Chtimes(p, time.Now(), time.Now().Add(time.Hour))
	if _, err := up.Fetch(context.Background(), e, 0, 10); !errors.Is(err, upstream.ErrChanged) {
		t.Errorf("Fetch of a changed file: %v, want ErrChanged", err)
	}
	os.Remove(p)
	if _, err := up.Fetch(context.Background(), e, 0, 10); !errors.Is(err, upstream.ErrNotFound) {
		t.Errorf("Fetch of a removed file: %v, want ErrNotFound", err)
	}
}

// TestHttpdirCrawlsOriginListings checks that the origin's HTML listings
// alone (the index hidden) give the same catalog, sizes from HEAD.
func TestHttpdirCrawlsOriginListings(t *testing.T) {
	s, err := New(newTree(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == indexURLPath {
			http.NotFound(w, r)
			return
		}
		s.ServeHTTP(w, r)
	}))
	defer srv.Close()
	up, err := httpdir.New(srv.URL, httpdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := up.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
		size, ok := testFiles[e.Name]
		if !ok {
			size = testFiles["a.img"]
		}
		if e.Size != int64(size) || e.ETag == "" {
			t.Errorf("%s: %+v", e.Name, e)
		}
	}
	if want := indexedNames(); !slices.Equal(names, want) {
		t.Errorf("catalog %q\nwant %q", names, want)
	}
}
