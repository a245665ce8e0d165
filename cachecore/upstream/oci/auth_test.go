package oci

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// TestRegistryBasicAuth: a registry with htpasswd basic authentication
// lists and serves with the right credentials; without them, or with
// wrong ones, List fails saying the registry wants credentials, and the
// password shows nowhere.
func TestRegistryBasicAuth(t *testing.T) {
	r := testregistry.Start(t, testregistry.Config{Users: map[string]string{"alice": "pa55-w0rd"}})
	f := pushFixture(t, r, "alice:pa55-w0rd")
	refused := countStatus(r, 401) // by skopeo's pushes
	u, logs := newRegistryUpstream(t, r, Options{Credentials: "alice:pa55-w0rd", Repos: []string{"vm/disks"}})
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, u, entry(t, es, "vm/disks/jammy/notes.txt")); string(got) != string(f.notes) {
		t.Errorf("notes.txt = %q", got)
	}
	// The registry asks once; the credentials go with every request after.
	if n := countStatus(r, 401) - refused; n != 1 {
		t.Errorf("%d requests refused, want the first one only: basic credentials are sent up front once the registry asked for them", n)
	}
	for _, cred := range []string{"", "alice:wrong-pa55"} {
		u, logs2 := newRegistryUpstream(t, r, Options{Credentials: cred, Repos: []string{"vm/disks"}})
		_, err := u.List(context.Background())
		if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "credentials") {
			t.Errorf("List with credentials %q: %v, want a 401 saying the registry wants credentials", cred, err)
		}
		if err != nil && strings.Contains(err.Error()+logs2.String(), "pa55") {
			t.Errorf("a password shows: %v", err)
		}
	}
	if strings.Contains(logs.String()+u.URL("vm/disks/jammy/notes.txt"), "pa55") {
		t.Errorf("the password shows in the log or URL")
	}
}

// TestRegistryTokenAuth: a registry behind a token server (the bearer
// flow, as Docker Hub): List and Fetch get tokens per repository scope,
// reuse them, and fetch a new one before the old one expires, so that no
// request is refused for an expired token.
func TestRegistryTokenAuth(t *testing.T) {
	ts := testregistry.StartTokenServer(t, map[string]string{"bob": "t0ken-pw"})
	r := testregistry.Start(t, testregistry.Config{Token: ts})
	f := pushFixture(t, r, "bob:t0ken-pw")

	u, logs := newRegistryUpstream(t, r, Options{Credentials: "bob:t0ken-pw"})
	var mu sync.Mutex
	now := time.Now()
	u.auth.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	issued := ts.Issued.Load()
	es, err := u.List(context.Background()) // the catalog too: scope registry:catalog:*
	if err != nil {
		t.Fatal(err)
	}
	disk := entry(t, es, "vm/disks/jammy/disk.qcow2")
	if got := fetchAll(t, u, disk); string(got) != string(f.disk) {
		t.Errorf("disk.qcow2 differs")
	}
	// One token for the catalog, one per repository: reused by every
	// HEAD, GET and range after.
	if n := ts.Issued.Load() - issued; n != 3 {
		t.Errorf("%d tokens issued, want 3 (catalog, vm/disks, library/hello); scopes asked: %q", n, ts.Scopes())
	}
	unauthorized := countStatus(r, 401)

	// Past three quarters of the tokens' 300 s life: the next requests
	// fetch new ones first, and the registry refuses none of them.
	mu.Lock()
	now = now.Add(230 * time.Second)
	mu.Unlock()
	issued = ts.Issued.Load()
	if _, err := u.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	rd, err := u.Fetch(context.Background(), disk, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rd)
	rd.Close()
	if n := ts.Issued.Load() - issued; n != 3 {
		t.Errorf("%d tokens issued after 230 s, want 3 new ones", n)
	}
	if n := countStatus(r, 401) - unauthorized; n != 0 {
		t.Errorf("the registry refused %d requests after the refresh, want none", n)
	}

	// Anonymous pulls from a token server that grants them.
	ts.Anonymous = true
	anon, _ := newRegistryUpstream(t, r, Options{Repos: []string{"vm/disks"}})
	if _, err := anon.List(context.Background()); err != nil {
		t.Errorf("anonymous List: %v", err)
	}
	ts.Anonymous = false
	anon, _ = newRegistryUpstream(t, r, Options{Repos: []string{"vm/disks"}})
	if _, err := anon.List(context.Background()); err == nil || !strings.Contains(err.Error(), "token endpoint refused") {
		t.Errorf("anonymous List, anonymous refused: %v", err)
	}
	if strings.Contains(logs.String(), "t0ken-pw") {
		t.Errorf("the password shows in the log")
	}
}

func countStatus(r *testregistry.Registry, status int) int {
	n := 0
	for _, q := range r.Requests() {
		if q.Status == status {
			n++
		}
	}
	return n
}

// TestRedirectDropsCredentials: a blob GET the registry redirects to
// another host (a CDN, S3) follows without the registry's Authorization;
// the registry's own requests carry it.
func TestRedirectDropsCredentials(t *testing.T) {
	data := []byte("blob bytes from the CDN")
	var mu sync.Mutex
	var cdnAuth []string
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cdnAuth = append(cdnAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(data)))
	}))
	defer cdn.Close()
	f := newFakeRegistry()
	layer := f.blob(data)
	f.tag("r", "t", f.manifest(f.artifact(titled(layer, "a.img"))))
	var regAuth []string
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		regAuth = append(regAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="reg"`)
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, cdn.URL+"/blob?sig=x", http.StatusTemporaryRedirect)
			return true
		}
		return false
	}
	u, _ := newFakeUpstream(t, f, Options{Credentials: "carol:hunter2", Repos: []string{"r"}})
	es := listOK(t, u)
	rd, err := u.Fetch(context.Background(), entry(t, es, "r/t/a.img"), 5, 10)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	rd.Close()
	if err != nil || string(got) != string(data[5:15]) {
		t.Fatalf("Fetch through the redirect = %q, %v", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(cdnAuth) != 1 || cdnAuth[0] != "" {
		t.Errorf("the CDN saw Authorization %q, want none", cdnAuth)
	}
	if regAuth[len(regAuth)-1] == "" {
		t.Errorf("the registry's blob request carried no credentials")
	}
}

// TestStaticToken: credentials without a colon are a bearer token sent
// to the registry as is (no token flow).
func TestStaticToken(t *testing.T) {
	f := newFakeRegistry()
	f.tag("r", "t", f.manifest(f.artifact(f.blob([]byte("x")))))
	tokenRegistry(f, "http://127.0.0.1:1/never")
	u, _ := newFakeUpstream(t, f, Options{Credentials: "good-token", Repos: []string{"r"}})
	listOK(t, u)
	u.SetCredentials("bad-token")
	if _, err := u.List(context.Background()); err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "bad-token") {
		t.Errorf("List with a refused token: %v", err)
	}
}

func TestScopeOf(t *testing.T) {
	for path, want := range map[string]string{
		"/v2/":                              "",
		"/v2/_catalog":                      "registry:catalog:*",
		"/v2/a/b/tags/list":                 "repository:a/b:pull",
		"/v2/a/manifests/v1":                "repository:a:pull",
		"/v2/a/blobs/sha256:00":             "repository:a:pull",
		"/v2/x/blobs/y/manifests/sha256:00": "repository:x/blobs/y:pull",
		"/other":                            "",
		"/v2/manifests/":                    "",
		"/v2/library/hello/blobs/uploads/abc-def": "repository:library/hello:pull",
	} {
		if got := scopeOf(path); got != want {
			t.Errorf("scopeOf(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestParseTokenReply(t *testing.T) {
	asked := time.Unix(1000, 0)
	for _, tc := range []struct {
		body    string
		value   string
		ttl     time.Duration
		wantErr string
	}{
		{`{"token":"a","expires_in":300}`, "a", 300 * time.Second, ""},
		{`{"access_token":"b","token":"a"}`, "b", 60 * time.Second, ""},
		{`{"token":"a","expires_in":-5}`, "a", 60 * time.Second, ""},
		{`{"token":"a","expires_in":99999999999}`, "a", 24 * time.Hour, ""},
		{`{"token":""}`, "", 0, "no token"},
		{`[]`, "", 0, "not the JSON"},
		{`{"token":"a b"}`, "", 0, "cannot go in a header"},
		{`{"token":"é"}`, "", 0, "cannot go in a header"},
	} {
		tok, err := parseTokenReply([]byte(tc.body), asked)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %v, want an error saying %q", tc.body, err, tc.wantErr)
			}
		case err != nil || tok.value != tc.value || tok.expires != asked.Add(tc.ttl) || tok.refreshAt != asked.Add(tc.ttl*3/4):
			t.Errorf("%s: %+v, %v; want %q for %v", tc.body, tok, err, tc.value, tc.ttl)
		}
	}
}

// TestRealmChecks: a Bearer challenge naming no realm, a realm that is
// not http(s), or a plain http realm for an https registry is refused.
func TestRealmChecks(t *testing.T) {
	a := newAuthTransport(http.DefaultTransport, mustURL("https://reg.example"), time.Second, slog.New(slog.DiscardHandler))
	for _, realm := range []string{"", "ftp://x/token", "/relative", "http://auth.example/token"} {
		if _, err := a.checkRealm(realm); err == nil {
			t.Errorf("realm %q accepted for an https registry", realm)
		}
	}
	if r, err := a.checkRealm("https://user:pw@auth.example/token"); err != nil || r.User != nil {
		t.Errorf("https realm: %v, %v", r, err)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
