package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test, and a server
// certificate for 127.0.0.1 that it signed.
type testCA struct {
	pemFile string // the CA certificate, PEM
	server  tls.Certificate
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "imgcache test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{pemFile: pemFile, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// authLog records the Authorization headers a server saw, by path.
type authLog struct {
	mu   sync.Mutex
	seen map[string][]string
}

func (a *authLog) add(r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen[r.URL.Path] = append(a.seen[r.URL.Path], r.Header.Get("Authorization"))
}

func (a *authLog) get(path string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen[path]...)
}

// tlsProxy serves target over TLS with ca's certificate; handler may
// answer first.
func tlsProxy(t *testing.T, ca *testCA, target string, handler func(w http.ResponseWriter, r *http.Request) bool) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handler == nil || !handler(w, r) {
			rp.ServeHTTP(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.server}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// TestTLSAndCredentials: an https upstream with a private CA is refused
// without --ca-file and served with it; the credentials from
// --credentials-file reach the upstream but not another host a redirect
// leads to, and never show in the log, the xattrs or the command line.
func TestTLSAndCredentials(t *testing.T) {
	need(t, "sha256sum", "getfattr", "ls")
	const secret = "s3cret-Pa55word"
	root := t.TempDir()
	imgs := makeImages(t, root, map[string]int64{"a.img": 1 << 20, "moved.img": 1 << 20})
	origin := startOrigin(t, root)
	ca := newTestCA(t)

	elsewhere := &authLog{seen: map[string][]string{}}
	other := tlsProxy(t, ca, origin.url, func(w http.ResponseWriter, r *http.Request) bool { elsewhere.add(r); return false })
	home := &authLog{seen: map[string][]string{}}
	main := tlsProxy(t, ca, origin.url, func(w http.ResponseWriter, r *http.Request) bool {
		home.add(r)
		if r.Header.Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+secret)) {
			w.Header().Set("WWW-Authenticate", `Basic realm="images"`)
			http.Error(w, "who are you", http.StatusUnauthorized)
			return true
		}
		if r.URL.Path == "/moved.img" && isRange(r) { // a redirect to another host:port
			http.Redirect(w, r, other.URL+"/moved.img", http.StatusFound)
			return true
		}
		return false
	})
	credFile := filepath.Join(t.TempDir(), "cred")
	if err := os.WriteFile(credFile, []byte("user:"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Without the CA: the certificate is refused, the mount starts empty
	// and says why.
	m := startMount(t, main.URL+"/", "", "--credentials-file", credFile)
	if ls := run(t, "ls", m.dir); strings.TrimSpace(ls) != "" {
		t.Fatalf("an upstream with an unknown CA was listed: %q", ls)
	}
	if e := xattrs(t, m.dir)["catalog_error"]; !strings.Contains(e, "certificate") {
		t.Fatalf("catalog_error = %q, want a certificate error", e)
	}
	m.unmount(t)

	// With --insecure it works, and says loudly that it is insecure.
	m = startMount(t, main.URL+"/", "", "--credentials-file", credFile, "--insecure")
	if !strings.Contains(m.proc.stderr.String(), "TLS CERTIFICATE VERIFICATION IS OFF") {
		t.Fatalf("--insecure did not warn:\n%s", m.proc.stderr.String())
	}
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img wrong with --insecure")
	}
	m.unmount(t)

	// With --ca-file, and --debug so that the log says as much as it can.
	m = startMount(t, main.URL+"/", "", "--credentials-file", credFile, "--ca-file", ca.pemFile, "--debug")
	for _, name := range []string{"a.img", "moved.img"} {
		if got := sha256sum(t, m.path(name)); got != imgs[name].sha256 {
			t.Fatalf("%s wrong over TLS", name)
		}
	}
	if seen := home.get("/moved.img"); len(seen) == 0 {
		t.Fatal("the upstream never saw a request for moved.img")
	}
	redirected := elsewhere.get("/moved.img")
	if len(redirected) == 0 {
		t.Fatal("the redirect was not followed")
	}
	for _, a := range redirected {
		if a != "" {
			t.Fatalf("credentials sent across a redirect to another host: %q", a)
		}
	}
	shown := m.proc.stderr.String() + run(t, "getfattr", "-R", "-d", "--absolute-names", m.dir)
	m.unmount(t)

	// The same credentials from the environment instead of a file.
	t.Setenv("IMGCACHE_CREDENTIALS", "user:"+secret)
	m = startMount(t, main.URL+"/", "", "--ca-file", ca.pemFile)
	t.Setenv("IMGCACHE_CREDENTIALS", "")
	if got := sha256sum(t, m.path("a.img")); got != imgs["a.img"].sha256 {
		t.Fatal("a.img wrong with credentials from the environment")
	}
	shown += m.proc.stderr.String()
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(m.proc.cmd.Process.Pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	shown += string(cmdline)
	if strings.Contains(shown, secret) || strings.Contains(shown, base64.StdEncoding.EncodeToString([]byte("user:"+secret))) {
		t.Fatal("the credentials show in the log, an xattr or the command line")
	}
}
