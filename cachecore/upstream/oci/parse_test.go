package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

func TestParseChallenges(t *testing.T) {
	type c = challenge
	for _, tc := range []struct {
		in   []string
		want []challenge
	}{
		{[]string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			[]c{{"bearer", map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}}}},
		{[]string{`Basic realm="Registry Realm"`}, []c{{"basic", map[string]string{"realm": "Registry Realm"}}}},
		{[]string{`Basic realm="x", Bearer realm="y",scope="a b"`},
			[]c{{"basic", map[string]string{"realm": "x"}}, {"bearer", map[string]string{"realm": "y", "scope": "a b"}}}},
		{[]string{`Basic abc==`, `Bearer`}, []c{{"basic", map[string]string{"": "abc=="}}, {"bearer", map[string]string{}}}},
		{[]string{`BEARER Realm = "q\"uote\\d" , Service=svc,`}, []c{{"bearer", map[string]string{"realm": `q"uote\d`, "service": "svc"}}}},
		{[]string{`Bearer realm="unclosed`}, []c{{"bearer", map[string]string{"realm": "unclosed"}}}},
		{[]string{``, `,,, `, `"quoted"`}, nil},
		{[]string{`Bearer realm=a b=c`}, []c{{"bearer", map[string]string{"realm": "a"}}, {"b", map[string]string{}}}},
	} {
		if got := parseChallenges(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseChallenges(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`)
	f.Add(`Basic realm="x", Bearer realm="y",error="insufficient_scope"`)
	f.Add(`Basic dXNlcjpwYXNz==, Negotiate`)
	f.Add(`Bearer realm="a\"b\\`)
	f.Fuzz(func(t *testing.T, h string) {
		cs := parseChallenges([]string{h, h})
		if len(cs) > maxChallenges {
			t.Fatalf("%d challenges, over %d", len(cs), maxChallenges)
		}
		for _, c := range cs {
			if c.scheme == "" || c.scheme != strings.ToLower(c.scheme) || len(c.params) > maxParams {
				t.Fatalf("challenge %+v", c)
			}
			for k, v := range c.params {
				if k != strings.ToLower(k) || len(k)+len(v) > len(h) {
					t.Fatalf("parameter %q=%q of %q", k, v, h)
				}
			}
		}
	})
}

func TestParseManifest(t *testing.T) {
	d := func(n int) string { return "sha256:" + strings.Repeat(fmt.Sprint(n), 64) }
	layer := fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":10,"annotations":{"org.opencontainers.image.title":"a"}}`, d(1))
	config := fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2}`, d(2))
	for _, tc := range []struct {
		name, raw, contentType, err string
	}{
		{"oci image", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + config + `,"layers":[` + layer + `]}`, "", ""},
		{"media type from the reply", `{"schemaVersion":2,"config":` + config + `,"layers":[]}`, ocispecManifest, ""},
		{"docker image", `{"schemaVersion":2,"mediaType":"` + mediaTypeDockerManifest + `","config":` + config + `,"layers":[` + layer + `]}`, "", ""},
		{"index", fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":5}]}`, d(3)), "", ""},
		{"schema 1", `{"schemaVersion":1,"name":"x","fsLayers":[]}`, mediaTypeDockerSchema1Sig, "schema 1"},
		{"not json", `<html>`, "", "not a JSON"},
		{"no media type", `{"schemaVersion":2,"config":` + config + `}`, "text/plain", "unknown manifest media type"},
		{"no config", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`, "", "without a config"},
		{"sha512", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"sha512:00","size":1}}`, "", "not sha256"},
		{"negative size", fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":%q,"size":-1}}`, d(4)), "", "outside"},
		{"bad media type", fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b\n","digest":%q,"size":1}}`, d(4)), "", "media type"},
		{"index of blobs", fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/octet-stream","digest":%q,"size":5}]}`, d(3)), "", "not a manifest"},
		{"mixed", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"layers":[` + layer + `]}`, "", "an index with"},
	} {
		m, err := parseManifest([]byte(tc.raw), d(9), tc.contentType)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errBadManifest)):
			t.Errorf("%s: %v, want an errBadManifest saying %q", tc.name, err, tc.err)
		case err == nil && (m.desc.Digest.String() != d(9) || m.desc.Size != int64(len(tc.raw))):
			t.Errorf("%s: descriptor %+v", tc.name, m.desc)
		}
	}
}

const ocispecManifest = "application/vnd.oci.image.manifest.v1+json"

func FuzzParseManifest(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"`+d+`","size":2},"layers":[{"mediaType":"a/b","digest":"`+d+`","size":3,"annotations":{"org.opencontainers.image.title":"../x"}}]}`), "")
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"`+d+`","size":2,"platform":{"architecture":"amd64","os":"linux"}}]}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, contentType string) {
		m, err := parseManifest(raw, d, contentType)
		if err != nil {
			if !errors.Is(err, errBadManifest) {
				t.Fatalf("error %v does not wrap errBadManifest", err)
			}
			return
		}
		if !isManifestType(m.desc.MediaType) || len(m.children) > maxIndexChildren {
			t.Fatalf("manifest %+v", m.desc)
		}
		if (m.config != nil) == isIndex(m.desc.MediaType) {
			t.Fatalf("an index with a config or an image without: %+v", m)
		}
		descs := append(slices.Clone(m.layers), m.children...)
		if m.config != nil {
			descs = append(descs, *m.config)
		}
		for _, c := range descs {
			e := upstream.Entry{Name: "r/blobs/sha256/" + c.Digest.Encoded(), Size: c.Size, Digest: c.Digest.String(), ByDigest: true,
				Attrs: map[string]string{"media_type": c.MediaType}}
			if err := e.Validate(); err != nil {
				t.Fatalf("a descriptor that makes a bad entry: %v", err)
			}
		}
		for _, l := range m.layers {
			if name, ok, err := title(l); ok && err == nil {
				if e := (upstream.Entry{Name: "r/t/" + name}); e.Validate() != nil || strings.Contains(name, "/") {
					t.Fatalf("title %q accepted", name)
				}
			}
		}
		// Converted, it is still a manifest of the same blobs.
		s := &listing{got: map[string]*manifest{}, views: map[string]*manifest{}}
		for _, c := range m.children {
			s.got[c.Digest.String()] = &manifest{desc: c, config: &c}
		}
		v := s.view(m)
		if _, err := parseManifest(v.raw, v.desc.Digest.String(), ""); err != nil {
			t.Fatalf("the conversion of %s is not a manifest: %v\n%s", raw, err, v.raw)
		}
	})
}

// pagesTransport serves a tag list in pages: each page's Link header
// from links, in turn, and its body from bodies.
type pagesTransport struct {
	links  []string
	bodies [][]byte
	calls  int
	hosts  []string
}

func (p *pagesTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	i := p.calls
	p.calls++
	p.hosts = append(p.hosts, req.URL.Host)
	h := http.Header{}
	body := []byte(`{"tags":[]}`)
	if i < len(p.bodies) {
		body = p.bodies[i]
	}
	if i < len(p.links) && p.links[i] != "" {
		h.Set("Link", p.links[i])
	}
	return &http.Response{StatusCode: 200, Header: h, Body: ioNopCloser(body), ContentLength: int64(len(body)), Request: req}, nil
}

// FuzzTagPages: whatever Link headers and bodies a registry sends, the
// tag listing (oras-go's paging under our caps) ends, never asks
// another host, and gives only tags that are safe names, at most
// MaxTags of them.
func FuzzTagPages(f *testing.F) {
	f.Add(`</v2/r/tags/list?n=2&last=b>; rel="next"`, `</v2/r/tags/list?last=b>; rel="next"`, []byte(`{"tags":["a","b"]}`), []byte(`{"tags":["c","../x"]}`))
	f.Add(`<http://evil.example/v2/r/tags/list>; rel="next"`, ``, []byte(`{"tags":["a"]}`), []byte(`{}`))
	f.Add(`<?last=a>`, `<//other/x>`, []byte(`{"tags":null}`), []byte(`[]`))
	f.Fuzz(func(t *testing.T, link1, link2 string, body1, body2 []byte) {
		pt := &pagesTransport{links: []string{link1, link2, link1, link2, link1, link2}, bodies: [][]byte{body1, body2, body1, body2, body1, body2}}
		u, err := New("oci+http://registry.test", Options{Transport: pt, MaxTags: 5})
		if err != nil {
			t.Fatal(err)
		}
		tags, err := u.tags(context.Background(), "r", &refusals{})
		if pt.calls > 5*maxEmptyPages+10 {
			t.Fatalf("%d pages asked for", pt.calls)
		}
		for _, h := range pt.hosts {
			if h != "registry.test" {
				t.Fatalf("a page asked of %q", h)
			}
		}
		if err != nil {
			return
		}
		if len(tags) > 5 || !slices.IsSorted(tags) {
			t.Fatalf("tags %q", tags)
		}
		for _, tag := range tags {
			if !tagRE.MatchString(tag) {
				t.Fatalf("tag %q", tag)
			}
		}
	})
}

// TestTagPagesLoop: a registry whose Link points back at the same page
// forever is stopped: by the tag cap, or by the empty-page cap.
func TestTagPagesLoop(t *testing.T) {
	loop := `</v2/r/tags/list>; rel="next"`
	for _, body := range []string{`{"tags":["a"]}`, `{"tags":[]}`} {
		pt := &pagesTransport{}
		for range 1000 {
			pt.links = append(pt.links, loop)
			pt.bodies = append(pt.bodies, []byte(body))
		}
		u, _ := New("oci+http://registry.test", Options{Transport: pt, MaxTags: 100})
		if _, err := u.tags(context.Background(), "r", &refusals{}); err == nil || pt.calls > 101 {
			t.Errorf("Link loop of %s: %v after %d pages", body, err, pt.calls)
		}
	}
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		url, err, base string
	}{
		{"oci://registry.example", "", "https://registry.example"},
		{"oci://registry.example:5000/", "", "https://registry.example:5000"},
		{"oci+http://127.0.0.1:5000", "", "http://127.0.0.1:5000"},
		{"oci://user:secret@registry.example", "", "https://registry.example"},
		{"https://registry.example", "scheme must be oci", ""},
		{"oci://registry.example/v2/x", "no path", ""},
		{"oci://registry.example?x=1", "no path", ""},
		{"oci://", "no host", ""},
		{"oci://user:secret@bad host", "cannot parse", ""},
	} {
		u, err := New(tc.url, Options{})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("New(%q): %v, want an error saying %q", tc.url, err, tc.err)
			}
		case err != nil:
			t.Errorf("New(%q): %v", tc.url, err)
		case u.base.String() != tc.base:
			t.Errorf("New(%q) base %s, want %s", tc.url, u.base, tc.base)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): the password shows: %v", tc.url, err)
		}
	}
	if _, err := New("oci://r.example", Options{Repos: []string{"Upper/Case"}}); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Errorf("an invalid --repo: %v", err)
	}
	u, _ := New("oci://user:secret@r.example", Options{})
	if c := u.auth.cred.Load(); c.user != "user" || c.password != "secret" {
		t.Errorf("credentials from the URL: %+v", c)
	}
	for name, want := range map[string]string{
		"vm/disks/jammy/disk.qcow2":           "https://r.example/v2/vm/disks/manifests/jammy",
		"vm/disks/blobs/sha256/" + hex64("a"): "https://r.example/v2/vm/disks/blobs/sha256:" + hex64("a"),
		"vm/disks/index.json":                 "https://r.example/v2/vm/disks/tags/list",
		"x":                                   "https://r.example/v2/",
		"":                                    "oci://r.example",
	} {
		if got := u.URL(name); got != want {
			t.Errorf("URL(%q) = %q, want %q", name, got, want)
		}
	}
	if _, err := url.Parse(u.URL("a/b/c")); err != nil {
		t.Error(err)
	}
	// The mount's source is the registry as given, credentials removed.
	for given, want := range map[string]string{
		"oci+http://127.0.0.1:5000":        "oci+http://127.0.0.1:5000",
		"oci+http://127.0.0.1:5000/":       "oci+http://127.0.0.1:5000",
		"oci://user:secret@r.example:5000": "oci://r.example:5000",
	} {
		u, err := New(given, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := u.URL(""); got != want {
			t.Errorf("New(%q).URL(\"\") = %q, want %q", given, got, want)
		}
	}
}

func hex64(c string) string { return strings.Repeat(c, 64) }
