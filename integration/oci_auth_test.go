package integration

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// authFixture is what the auth tests push into a registry that wants
// credentials: a container image (library/alpine:3.20, a layer of it over
// 3 MiB) and a disk image as an artifact (vm/disks:jammy, jammy.qcow2).
type authFixture struct {
	image testregistry.Descriptor // library/alpine:3.20's manifest
	disk  string                  // the qcow2 file pushed
}

// pushAuthFixture pushes the fixture with skopeo, logged in as cred
// (user:password).
func pushAuthFixture(t *testing.T, reg *testregistry.Registry, cred string) *authFixture {
	t.Helper()
	testregistry.Need(t, "skopeo", "qemu-img")
	l := testregistry.NewLayout(t)
	img := l.Image("amd64",
		map[string]string{"etc/os-release": "ID=alpine\n", "bin/sh": noise("bin/sh", 3<<20+100<<10)},
		map[string]string{"etc/motd": "welcome\n"})
	l.Tag("3.20", img)
	reg.Push(l, "3.20", "library/alpine", "--dest-creds", cred)

	disk := filepath.Join(t.TempDir(), "jammy.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", disk, "8G")
	al := testregistry.NewLayout(t)
	al.Tag("jammy", al.Artifact(testregistry.File{Title: "jammy.qcow2", Path: disk}))
	reg.Push(al, "jammy", "vm/disks", "--dest-creds", cred)
	return &authFixture{image: img, disk: disk}
}

// copyImage has skopeo copy library/alpine:3.20 out of the mount; the
// manifest and every blob it wrote have the sha256 they are named by.
func (f *authFixture) copyImage(t *testing.T, m *mount) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "alpine")
	skopeo(t, "copy", "oci:"+m.path("library/alpine")+":3.20", "dir:"+dest)
	if got := sha256sum(t, filepath.Join(dest, "manifest.json")); got != strings.TrimPrefix(f.image.Digest, "sha256:") {
		t.Fatalf("skopeo copied a manifest of sha256 %s, want %s", got, f.image.Digest)
	}
	var man struct {
		Config testregistry.Descriptor
		Layers []testregistry.Descriptor
	}
	b, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
	if err != nil || json.Unmarshal(b, &man) != nil || len(man.Layers) != 2 {
		t.Fatalf("manifest.json: %v\n%s", err, b)
	}
	for _, d := range append([]testregistry.Descriptor{man.Config}, man.Layers...) {
		hex := strings.TrimPrefix(d.Digest, "sha256:")
		if got := sha256sum(t, filepath.Join(dest, hex)); got != hex {
			t.Errorf("skopeo wrote blob %s with sha256 %s", hex, got)
		}
	}
}

// readDisk reads jammy.qcow2 whole through its titled name.
func (f *authFixture) readDisk(t *testing.T, m *mount) {
	t.Helper()
	if got, want := sha256sum(t, m.path("vm/disks/jammy/jammy.qcow2")), sha256sum(t, f.disk); got != want {
		t.Fatalf("jammy.qcow2 through the mount: sha256 %s, want %s", got, want)
	}
}

// seenRequest is a request a registryFront passed on to the registry.
type seenRequest struct {
	method, path, auth string
}

// registryFront is a reverse proxy in front of a registry that records
// the Authorization of every request it passes on (the registry's own
// log leaves the header out). With a CA it serves TLS with the CA's
// certificate for 127.0.0.1, as a TLS-terminating proxy in front of a
// registry does.
type registryFront struct {
	host string // 127.0.0.1:PORT

	mu   sync.Mutex // protects the following
	seen []seenRequest
}

func startRegistryFront(t *testing.T, reg *testregistry.Registry, ca *testCA) *registryFront {
	t.Helper()
	target, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	f := &registryFront{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("Authorization")})
		f.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // readers that leave early are expected
	if ca != nil {
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	f.host = srv.Listener.Addr().String()
	return f
}

func (f *registryFront) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.seen)
}

// shown is everything of a running mount where a secret must not be: its
// log, every user.* attribute of the tree (getfattr -d), its line of
// /proc/mounts and its command line as ps shows it.
func shown(t *testing.T, m *mount) string {
	t.Helper()
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == m.dir {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("%s is not in /proc/mounts", m.dir)
	}
	ps := run(t, "ps", "-ww", "-o", "args=", "-p", strconv.Itoa(m.proc.cmd.Process.Pid))
	if !strings.Contains(ps, "--credentials-file") {
		t.Fatalf("ps shows the daemon as %q: not the mount", ps)
	}
	return m.proc.stderr.String() + run(t, "getfattr", "-R", "-d", "--absolute-names", m.dir) + line + ps
}

// writeCredentials writes a --credentials-file.
func writeCredentials(t *testing.T, cred string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(p, []byte(cred+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// refused mounts with the flags (credentials missing or wrong) and checks
// that the mount shows nothing of the registry and says why: the root's
// catalog_error and the log carry want, and a file the registry holds
// is not there to read.
func refused(t *testing.T, upstream, want string, flags ...string) *mount {
	t.Helper()
	m := startMount(t, upstream, "", flags...)
	e := xattrs(t, m.dir)["catalog_error"]
	if !strings.Contains(e, want) {
		t.Errorf("catalog_error = %q, want it to say %q", e, want)
	}
	waitUntil(t, "the log to say why the registry refused", func() bool { return strings.Contains(m.proc.stderr.String(), want) })
	if ls := run(t, "ls", "-R", m.dir); strings.Contains(ls, "jammy") || strings.Contains(ls, "blobs") {
		t.Errorf("ls -R of a mount the registry refused:\n%s", ls)
	}
	if out, err := runErr("sha256sum", m.path("vm/disks/jammy/jammy.qcow2")); err == nil {
		t.Errorf("jammy.qcow2 read from a mount the registry refused: %s", out)
	}
	return m
}

// TestOCIBasicAuth: a registry with htpasswd basic authentication behind
// TLS (oci://, the CA given with --ca-file). Mounted with
// --credentials-file, skopeo copies an image out of the mount and
// sha256sum reads a disk image, with the registry's bytes, and every
// request the registry answered carried the credentials. Without
// credentials, or with a wrong password, the mount lists nothing and its
// catalog_error and log say the registry wants credentials. The password
// shows nowhere: not in the log (with --debug), an attribute, /proc/mounts
// or ps.
func TestOCIBasicAuth(t *testing.T) {
	need(t, "sha256sum", "getfattr", "ls", "ps")
	const user, secret, wrong = "alice", "Basic-s3cret-pw", "n0t-the-Passw0rd"
	reg := testregistry.Start(t, testregistry.Config{Users: map[string]string{user: secret}})
	f := pushAuthFixture(t, reg, user+":"+secret)
	ca := newTestCA(t)
	front := startRegistryFront(t, reg, ca)
	upstream := "oci://" + front.host
	flags := []string{"--ca-file", ca.pemFile, "--repo", "library/alpine", "--repo", "vm/disks", "--debug"}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+secret))
	secrets := map[string]string{ // value -> what it is
		secret: "the password", wrong: "the wrong password",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + secret)): "the basic credentials",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + wrong)):  "the wrong basic credentials",
	}

	const wantsCredentials = "401 Unauthorized: the registry wants credentials (--credentials-file) or refused them"
	m := refused(t, upstream, wantsCredentials, flags...)
	m.unmount(t)
	m = refused(t, upstream, wantsCredentials, append(flags, "--credentials-file", writeCredentials(t, user+":"+wrong))...)
	leaked := shown(t, m)
	m.unmount(t)

	before, refusedBefore := len(front.requests()), count401(reg)
	m = startMount(t, upstream, "", append(flags, "--credentials-file", writeCredentials(t, user+":"+secret))...)
	f.copyImage(t, m)
	f.readDisk(t, m)
	leaked += shown(t, m)
	checkHidden(t, leaked, secrets)

	// The mount's first request (the tag list of its first repository,
	// made alone) went without credentials, and the registry refused it;
	// every request after it carried them, manifests and blobs alike, and
	// none was refused.
	seen := front.requests()[before:]
	blobs := 0
	for i, q := range seen {
		switch {
		case i == 0 && q.auth == "":
		case q.auth != basic:
			t.Errorf("%s %s went to the registry with Authorization %q, want the credentials", q.method, q.path, q.auth)
		case strings.Contains(q.path, "/blobs/"):
			blobs++
		}
	}
	t.Logf("the registry saw %d requests of the mount with credentials, %d of blobs", len(seen), blobs)
	if blobs == 0 {
		t.Errorf("no blob request carried the credentials; the registry saw %d requests", len(seen))
	}
	if n := count401(reg) - refusedBefore; n != 1 {
		t.Errorf("the registry refused %d requests of the mount with credentials, want its first one only", n)
	}
}

// TestOCIBearerToken: a registry behind a token server (distribution's
// token auth, as Docker Hub: the registry trusts the JWTs the server
// signs). Mounted with --credentials-file, skopeo copies an image out of
// the mount and sha256sum reads a disk image with the registry's bytes.
// The credentials go to the token server only: the registry sees bearer
// tokens, each granting pull of the repository of the request, never the
// basic credentials. Tokens are fetched again once they are due, before
// the registry refuses them. Without credentials, or with a wrong
// password, the mount lists nothing and says the token endpoint refused.
// Neither the password nor a token shows in the log, an attribute, /proc/mounts or ps.
func TestOCIBearerToken(t *testing.T) {
	need(t, "sha256sum", "getfattr", "ls", "ps")
	const user, secret, wrong = "bob", "T0ken-s3cret-pw", "n0t-the-Passw0rd"
	ts := testregistry.StartTokenServer(t, map[string]string{user: secret})
	// Short-lived tokens, so that the mount must fetch new ones during
	// the test. (distribution accepts a token up to 60 s past its exp,
	// so a mount that kept using the old ones would not be refused:
	// what shows a refresh is the token server issuing new tokens.)
	ts.TTL = 3 * time.Second
	reg := testregistry.Start(t, testregistry.Config{Token: ts})
	f := pushAuthFixture(t, reg, user+":"+secret)
	front := startRegistryFront(t, reg, nil)
	upstream := "oci+http://" + front.host
	flags := []string{"--repo", "library/alpine", "--repo", "vm/disks", "--catalog-ttl", "1h", "--debug"}

	const tokenRefused = "401 Unauthorized: the token endpoint refused the credentials"
	m := refused(t, upstream, tokenRefused, flags...)
	m.unmount(t)
	m = refused(t, upstream, tokenRefused, append(flags, "--credentials-file", writeCredentials(t, user+":"+wrong))...)
	leaked := shown(t, m)
	m.unmount(t)

	before := len(front.requests())
	m = startMount(t, upstream, "", append(flags, "--credentials-file", writeCredentials(t, user+":"+secret))...)
	f.copyImage(t, m)
	first := front.requests()[before:]
	scopes := len(ts.Scopes())

	// Once the tokens are due (three quarters of their life), a read of
	// what is not cached (the disk image: only its tag was listed so
	// far, with the vm/disks token the mount holds) fetches a new token
	// first, and the registry refuses none of the requests.
	time.Sleep(ts.TTL) // what is waited for is the clock
	refusedBefore := count401(reg)
	f.readDisk(t, m)
	second := front.requests()[before+len(first):]
	if n := count401(reg) - refusedBefore; n != 0 {
		t.Errorf("the registry refused %d requests after the tokens were due, want none: they are fetched again first", n)
	}
	if asked := ts.Scopes()[scopes:]; !slices.Contains(asked, "repository:vm/disks:pull") {
		t.Errorf("after the tokens were due, the token server was asked for %q, want a new repository:vm/disks:pull", asked)
	}
	old := map[string]bool{}
	for _, q := range first {
		old[q.auth] = true
	}
	renewed := false
	for _, q := range second {
		if strings.Contains(q.path, "/vm/disks/blobs/") && q.auth != "" && !old[q.auth] {
			renewed = true
		}
	}
	if !renewed {
		t.Errorf("the disk image's blob was read with none but the tokens got before they were due")
	}

	// What the registry saw: tokens, each for the request's repository;
	// never the basic credentials.
	leaked += shown(t, m)
	secrets := map[string]string{
		secret: "the password", wrong: "the wrong password",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + secret)): "the basic credentials",
		base64.StdEncoding.EncodeToString([]byte(user + ":" + wrong)):  "the wrong basic credentials",
	}
	bearers := 0
	for _, q := range append(first, second...) {
		tok, isBearer := strings.CutPrefix(q.auth, "Bearer ")
		switch {
		case q.auth == "":
			continue
		case !isBearer:
			t.Errorf("%s %s went to the registry with Authorization %q, want a bearer token", q.method, q.path, q.auth)
			continue
		}
		bearers++
		secrets[tok] = "a token the registry was sent"
		repo := repoOf(q.path)
		if repo == "" {
			continue
		}
		if grants := tokenGrants(t, tok); !slices.Contains(grants, "repository:"+repo+":pull") {
			t.Errorf("%s %s carried a token granting %q, want pull of %s", q.method, q.path, grants, repo)
		}
	}
	t.Logf("the registry saw %d requests with tokens; the token server issued %d tokens, for %q", bearers, ts.Issued.Load(), ts.Scopes())
	if bearers == 0 {
		t.Errorf("no request to the registry carried a token")
	}
	checkHidden(t, leaked, secrets)
}

// checkHidden fails the test for each secret (value -> what it is) that
// text holds.
func checkHidden(t *testing.T, text string, secrets map[string]string) {
	t.Helper()
	for v, what := range secrets {
		if strings.Contains(text, v) {
			t.Errorf("%s shows in the log, an attribute, /proc/mounts or ps", what)
		}
	}
}

func count401(reg *testregistry.Registry) int {
	n := 0
	for _, q := range reg.Requests() {
		if q.Status == http.StatusUnauthorized {
			n++
		}
	}
	return n
}

// repoOf is the repository a registry API path names ("" for none).
func repoOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/list"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

// tokenGrants reads the access claim of a JWT (not checking its
// signature: the registry did) as "type:name:action" strings.
func tokenGrants(t *testing.T, tok string) []string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("a bearer token of %d parts, want a JWT", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Access []struct {
			Type, Name string
			Actions    []string
		}
	}
	if err != nil || json.Unmarshal(b, &claims) != nil {
		t.Fatalf("a bearer token's claims do not decode: %v", err)
	}
	var out []string
	for _, a := range claims.Access {
		for _, act := range a.Actions {
			out = append(out, a.Type+":"+a.Name+":"+act)
		}
	}
	return out
}
