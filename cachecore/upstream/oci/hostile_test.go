package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

func listOK(t *testing.T, u *Upstream) []upstream.Entry {
	t.Helper()
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := e.Validate(); err != nil {
			t.Fatalf("List gave an entry that does not validate: %v", err)
		}
	}
	return es
}

func indexTags(t *testing.T, es []upstream.Entry, repo string) map[string]string {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(entry(t, es, repo+"/index.json").Content, &idx); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range idx.Manifests {
		out[m.Annotations["org.opencontainers.image.ref.name"]] = m.Digest
	}
	return out
}

// TestManifestDigestMismatch: a manifest whose bytes are not its digest
// is refused: a new tag is left out, a known tag keeps its last manifest,
// the other tags are listed, and the log says why.
func TestManifestDigestMismatch(t *testing.T) {
	f := newFakeRegistry()
	good := f.manifest(f.artifact(titled(f.blob([]byte("good")), "a.img")))
	other := f.manifest(f.artifact(titled(f.blob([]byte("other")), "a.img")))
	f.tag("r", "good", good)
	f.tag("r", "moving", good)
	u, logs := newFakeUpstream(t, f, Options{})
	if tags := indexTags(t, listOK(t, u), "r"); tags["moving"] != good {
		t.Fatalf("index.json tags %v", tags)
	}

	// Tag moving moves to other and a new tag bad appears, both served
	// with bytes that are not their digest.
	f.tag("r", "moving", other)
	f.tag("r", "bad", other)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/manifests/"+other) {
			w.Header().Set("Docker-Content-Digest", other)
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write(f.manifests[good])
			return true
		}
		return false
	}
	es := listOK(t, u)
	tags := indexTags(t, es, "r")
	if tags["good"] != good || tags["moving"] != good {
		t.Errorf("index.json tags %v: good and moving (kept) should name %s", tags, good)
	}
	if _, ok := tags["bad"]; ok {
		t.Errorf("tag bad, whose manifest does not match its digest, is listed")
	}
	for _, want := range []string{"digest mismatch", "tag kept at its last manifest", "tag left out"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestHostileTitles: titles that are not one safe file name are refused
// one by one with a log line; the others show.
func TestHostileTitles(t *testing.T) {
	f := newFakeRegistry()
	hostile := []string{"../x", "/etc/passwd", "a\x00b", strings.Repeat("a", 4096), ".hidden", "..", "a\u202egpj.exe", "dir/file"}
	var layers []map[string]any
	for i, title := range hostile {
		layers = append(layers, titled(f.blob([]byte(fmt.Sprint("hostile ", i))), title))
	}
	layers = append(layers,
		titled(f.blob([]byte("fine")), "ok.img"),
		titled(f.blob([]byte("one")), "dup.img"),
		titled(f.blob([]byte("two")), "dup.img"),
	)
	f.tag("r", "t", f.manifest(f.artifact(layers...)))
	u, logs := newFakeUpstream(t, f, Options{})
	es := listOK(t, u)
	var aliases []string
	for _, e := range es {
		if strings.HasPrefix(e.Name, "r/t/") {
			aliases = append(aliases, e.Name)
		}
	}
	if !slices.Equal(aliases, []string{"r/t/ok.img"}) {
		t.Errorf("tag directory holds %q, want only r/t/ok.img", aliases)
	}
	if n := strings.Count(logs.String(), "layer title refused"); n != len(hostile)+1 {
		t.Errorf("%d refusals logged, want %d:\n%s", n, len(hostile)+1, logs)
	}
	// Every blob is still in blobs/, by digest.
	if n := len(es) - 2 - len(aliases); n != len(hostile)+3+1+1 {
		t.Errorf("%d blobs, want %d (layers, config, manifest)", n, len(hostile)+5)
	}
}

// TestManyTags: 100,000 tags, paged by Link 1000 at a time, all listed
// with one manifest GET and one HEAD each, in bounded memory; one more
// tag than MaxTags fails List, naming the cap.
func TestManyTags(t *testing.T) {
	const n = DefaultMaxTags
	f := newFakeRegistry()
	d := f.manifest(f.artifact(titled(f.blob([]byte("disk")), "disk.img")))
	tags := map[string]string{}
	for i := range n {
		tags[fmt.Sprintf("v%06d", i)] = d
	}
	f.tags["r"] = tags
	u, err := New("oci+http://registry.test", Options{Transport: handlerTransport{f}, Concurrency: 16})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("100,000 tags: %d entries, index.json %d bytes, %d MiB held after List", len(es), entry(t, es, "r/index.json").Size, held>>20)
	// oci-layout, index.json, manifest, config, layer, and an alias a tag.
	if len(es) != 5+n {
		t.Errorf("%d entries, want %d", len(es), 5+n)
	}
	if g, h, p := f.count("GET /v2/r/manifests/"), f.count("HEAD /v2/r/manifests/"), f.count("GET /v2/r/tags/list"); g != 1 || h != n || p != n/listPageSize {
		t.Errorf("%d manifest GETs, %d HEADs, %d tag pages; want 1, %d, %d", g, h, p, n, n/listPageSize)
	}
	// What the catalog holds is about 300 bytes a tag (an alias entry
	// and a line of index.json); far below what a copy of anything per
	// tag would take.
	if held > 256<<20 {
		t.Errorf("List of 100,000 tags holds %d MiB", held>>20)
	}
	runtime.KeepAlive(es)

	f.tag("r", "one-too-many", d)
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "more than 100000 tags") {
		t.Errorf("List of %d tags: %v, want an error naming the cap", n+1, err)
	}
}

// TestHugeManifest: a 10 MiB manifest is refused, whether HEAD says so
// or only the GET shows it, and never read whole.
func TestHugeManifest(t *testing.T) {
	f := newFakeRegistry()
	big := f.artifact(f.blob([]byte("x")))
	big["annotations"] = map[string]string{"pad": strings.Repeat("p", 10<<20)}
	bigD := f.manifest(big)
	f.tag("r", "big", bigD)
	f.tag("r", "liar", bigD)
	f.tag("r", "fine", f.manifest(f.artifact(f.blob([]byte("y")))))
	var sent int64
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/liar") {
			if r.Method == "HEAD" { // a HEAD that hides the size
				w.Header().Set("Docker-Content-Digest", bigD)
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				return true
			}
		}
		if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/manifests/"+bigD) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.(http.Flusher).Flush() // chunked: no Content-Length to refuse it by
			for i := 0; i < 10<<10; i++ {
				k, err := w.Write(bytes.Repeat([]byte(" "), 1024))
				sent += int64(k)
				if err != nil {
					break
				}
			}
			return true
		}
		return false
	}
	u, logs := newFakeUpstream(t, f, Options{})
	tags := indexTags(t, listOK(t, u), "r")
	if _, ok := tags["big"]; ok || len(tags) != 1 {
		t.Errorf("index.json tags %v, want only fine", tags)
	}
	if !strings.Contains(logs.String(), "over the 4194304 a manifest may have") ||
		!strings.Contains(logs.String(), "more than 4194304 bytes") {
		t.Errorf("log does not say the manifests are over the cap:\n%s", logs)
	}
}

// tokenRegistry is a fake registry that wants bearer tokens from realm.
func tokenRegistry(f *fakeRegistry, realm string) {
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == "Bearer good-token" {
			return false
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="fake",scope="repository:r:pull"`, realm))
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
}

// TestTokenEndpointFaults: a token endpoint that hangs, answers garbage,
// no token, or refuses: List fails with a message saying so, naming no
// secret.
func TestTokenEndpointFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		want  string
	}{
		{"hangs", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "no answer within"},
		{"garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>login</html>")) }, "not the JSON of a token"},
		{"empty", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"expires_in":60}`)) }, "holds no token"},
		{"bad token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"token":"a\nb"}`)) }, "cannot go in a header"},
		{"huge", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"token":"` + strings.Repeat("t", 1<<20) + `"}`))
		}, "larger than"},
		{"refuses", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusUnauthorized) }, "refused the credentials"},
		{"429", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "9")
			http.Error(w, "slow down", http.StatusTooManyRequests)
		}, "429"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tokens := httptest.NewServer(http.HandlerFunc(tc.serve))
			defer tokens.Close()
			f := newFakeRegistry()
			f.tag("r", "t", f.manifest(f.artifact(f.blob([]byte("x")))))
			tokenRegistry(f, tokens.URL+"/token")
			timeout := time.Minute // a huge token under -race on a loaded machine takes its time
			if tc.name == "hangs" {
				timeout = 300 * time.Millisecond
			}
			u, logs := newFakeUpstream(t, f, Options{Repos: []string{"r"}, TokenTimeout: timeout, Credentials: "user:s3cret"})
			_, err := u.List(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "token request to") {
				t.Fatalf("List: %v, want an error of the token request saying %q", err, tc.want)
			}
			if strings.Contains(err.Error()+logs.String(), "s3cret") {
				t.Errorf("the password shows: %v\n%s", err, logs)
			}
			if tc.name == "429" && upstream.RetryAfterOf(err) != 9*time.Second {
				t.Errorf("429 of the token endpoint: Retry-After %v, want 9s", upstream.RetryAfterOf(err))
			}
		})
	}
}

// TestTooManyRequests: a 429 with Retry-After fails Fetch and List with
// an error the cache retries after that pause.
func TestTooManyRequests(t *testing.T) {
	f := newFakeRegistry()
	layer := f.blob([]byte("0123456789"))
	f.tag("r", "t", f.manifest(f.artifact(titled(layer, "a.img"))))
	u, _ := newFakeUpstream(t, f, Options{})
	es := listOK(t, u)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		w.Header().Set("Retry-After", "7")
		http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS"}]}`, http.StatusTooManyRequests)
		return true
	}
	_, err := u.Fetch(context.Background(), entry(t, es, "r/t/a.img"), 2, 5)
	var hs upstream.HTTPStatus
	if !upstream.Temporary(err) || upstream.RetryAfterOf(err) != 7*time.Second || !errors.As(err, &hs) || hs.HTTPStatus() != 429 {
		t.Errorf("Fetch under 429: %v (temporary %v, retry after %v)", err, upstream.Temporary(err), upstream.RetryAfterOf(err))
	}
	u.opts.Repos = []string{"r"}
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "429") || !upstream.Temporary(err) {
		t.Errorf("List under 429: %v, want a temporary error naming 429", err)
	}
}

// TestFetchReplies: what a blob reply may and may not be.
func TestFetchReplies(t *testing.T) {
	data := []byte("0123456789abcdefghij")
	f := newFakeRegistry()
	layer := f.blob(data)
	f.tag("r", "t", f.manifest(f.artifact(titled(layer, "a.img"))))
	u, logs := newFakeUpstream(t, f, Options{})
	e := entry(t, listOK(t, u), "r/t/a.img")
	read := func() ([]byte, error) {
		r, err := u.Fetch(context.Background(), e, 5, 10)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	if got, err := read(); err != nil || string(got) != "56789abcde" {
		t.Fatalf("Fetch(5, 10) = %q, %v", got, err)
	}
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter)
		want  string // "" for the right bytes
	}{
		{"whole blob (Range ignored)", func(w http.ResponseWriter) { w.Write(data) }, ""},
		{"wrong range", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 0-9/20")
			w.WriteHeader(206)
			w.Write(data[:10])
		}, "not the range asked for"},
		{"other size", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 5-14/21")
			w.WriteHeader(206)
			w.Write(data[5:15])
		}, "the blob has 21 bytes"},
		{"other blob", func(w http.ResponseWriter) {
			w.Header().Set("Docker-Content-Digest", digestOf([]byte("else")))
			w.Header().Set("Content-Range", "bytes 5-14/20")
			w.WriteHeader(206)
			w.Write(data[5:15])
		}, "the registry sent blob"},
		{"short body", func(w http.ResponseWriter) {
			w.Header().Set("Content-Range", "bytes 5-14/20")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(206)
			w.Write(data[5:9])
		}, "upstream reply ended early"},
		{"whole blob of another size", func(w http.ResponseWriter) { w.Write(append(data, 'x')) }, "whole blob of 21 bytes"},
		{"gzip", func(w http.ResponseWriter) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(data)
		}, "Content-Encoding"},
		{"gone", func(w http.ResponseWriter) { http.Error(w, "", http.StatusNotFound) }, "404"},
	} {
		f.hook = func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "/blobs/") {
				return false
			}
			tc.serve(w)
			return true
		}
		got, err := read()
		switch {
		case tc.want == "" && (err != nil || string(got) != "56789abcde"):
			t.Errorf("%s: %q, %v; want the range's bytes", tc.name, got, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %q, %v; want an error saying %q", tc.name, got, err, tc.want)
		}
		if tc.name == "short body" && !errors.Is(err, upstream.ErrShortBody) {
			t.Errorf("short body: %v does not wrap ErrShortBody", err)
		}
		if tc.name == "gone" && !errors.Is(err, upstream.ErrNotFound) {
			t.Errorf("404: %v does not wrap ErrNotFound", err)
		}
	}
	if !strings.Contains(logs.String(), "answered a Range request with the whole blob") {
		t.Errorf("a registry ignoring Range is not logged:\n%s", logs)
	}
}

// TestCatalog: without --repo the catalog names the repositories; a
// registry without one gets an error saying to pass --repo; an offline
// registry fails List (the cache keeps its last catalog).
func TestCatalog(t *testing.T) {
	f := newFakeRegistry()
	d := f.manifest(f.artifact(f.blob([]byte("x"))))
	for i := range 2500 {
		f.tag(fmt.Sprintf("team/repo%04d", i), "latest", d)
	}
	u, _ := newFakeUpstream(t, f, Options{})
	es := listOK(t, u)
	if len(es) != 2500*5 || f.count("GET /v2/_catalog") != 3 {
		t.Errorf("%d entries from %d catalog pages, want %d from 3", len(es), f.count("GET /v2/_catalog"), 2500*5)
	}

	// A repository of the catalog the credentials may not read is left
	// out; the others are listed.
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/team/repo0007/tags/list" {
			http.Error(w, `{"errors":[{"code":"DENIED"}]}`, http.StatusForbidden)
			return true
		}
		return false
	}
	if es := listOK(t, u); len(es) != 2499*5 {
		t.Errorf("%d entries with a forbidden repository, want %d", len(es), 2499*5)
	}
	f.hook = nil

	f.noCatalog = true
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Errorf("List without a catalog: %v, want an error saying to pass --repo", err)
	}
	u.opts.Repos = []string{"team/repo0001"}
	if es := listOK(t, u); len(es) != 5 {
		t.Errorf("--repo team/repo0001: %q", names(es))
	}
	u.opts.Repos = []string{"team/none"}
	if _, err := u.List(context.Background()); !errors.Is(err, upstream.ErrNotFound) || !strings.Contains(err.Error(), `"team/none"`) {
		t.Errorf("--repo of a repository the registry lacks: %v", err)
	}

	srv := httptest.NewServer(f)
	srv.Close()
	off, _ := New("oci+http://"+strings.TrimPrefix(srv.URL, "http://"), Options{Repos: []string{"team/repo0001"}})
	if _, err := off.List(context.Background()); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("List of a registry that is down: %v", err)
	}
}
