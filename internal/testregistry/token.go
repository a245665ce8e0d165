package testregistry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TokenServer is a token endpoint of the distribution token spec, as
// Docker Hub's auth server is: it grants every scope asked for to its
// users (basic authentication), and pull of everything to anonymous
// requests when Anonymous is set. Its tokens are ES256 JWTs whose x5c
// names a self-signed certificate, the registry's rootcertbundle.
type TokenServer struct {
	Realm    string // the token URL
	Service  string
	Issuer   string
	CertFile string // PEM of the signing certificate

	// TTL is the expires_in of the tokens (and their exp claim);
	// 0: 300 seconds, Docker Hub's.
	TTL       time.Duration
	Anonymous bool

	key   *ecdsa.PrivateKey
	der   []byte
	users map[string]string
	srv   *httptest.Server

	Issued atomic.Int64 // tokens issued

	mu     sync.Mutex // protects the following
	scopes []string   // the scope of each token request, in order
}

// StartTokenServer runs a token endpoint on 127.0.0.1 until the test ends.
func StartTokenServer(t testing.TB, users map[string]string) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "imgcache test token issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &TokenServer{Service: "imgcache-test-registry", Issuer: "imgcache-test-issuer", key: key, der: der, users: users}
	ts.CertFile = filepath.Join(t.TempDir(), "token-cert.pem")
	if err := os.WriteFile(ts.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	ts.Realm = ts.srv.URL + "/token"
	return ts
}

// Scopes are the scope parameters of the token requests so far.
func (ts *TokenServer) Scopes() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.scopes...)
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	user, pw, ok := r.BasicAuth()
	switch {
	case ok && ts.users[user] == pw && pw != "":
	case !ok && ts.Anonymous:
		user = ""
	default:
		w.Header().Set("WWW-Authenticate", `Basic realm="imgcache test tokens"`)
		http.Error(w, `{"details":"bad credentials"}`, http.StatusUnauthorized)
		return
	}
	scopes := r.URL.Query()["scope"]
	ts.mu.Lock()
	ts.scopes = append(ts.scopes, strings.Join(scopes, " "))
	ts.mu.Unlock()
	type access struct {
		Type    string   `json:"type"`
		Name    string   `json:"name"`
		Actions []string `json:"actions"`
	}
	grants := []access{}
	for _, s := range scopes {
		parts := strings.Split(s, ":")
		if len(parts) < 3 {
			continue
		}
		actions := strings.Split(parts[len(parts)-1], ",")
		if user == "" {
			actions = []string{"pull"}
		}
		grants = append(grants, access{Type: parts[0], Name: strings.Join(parts[1:len(parts)-1], ":"), Actions: actions})
	}
	ttl := ts.TTL
	if ttl == 0 {
		ttl = 300 * time.Second
	}
	now := time.Now()
	claims := map[string]any{
		"iss": ts.Issuer, "sub": user, "aud": r.URL.Query().Get("service"),
		"exp": now.Add(ttl).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(randomBytes(9)), "access": grants,
	}
	tok := ts.sign(claims)
	ts.Issued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": int(ttl / time.Second), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

// sign makes an ES256 JWT of the claims, its certificate in x5c.
func (ts *TokenServer) sign(claims map[string]any) string {
	header, _ := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.der)}})
	body, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(body)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
