// Package testregistry runs real registries for tests: Debian's
// docker-registry (distribution 2.8) on 127.0.0.1 with a config of the
// test's own (plain, htpasswd basic auth, bearer tokens from a token
// server of the test's own, or a pull-through cache of another
// registry), and pushes content into them with skopeo from OCI layouts
// the test writes. A missing tool fails the test: .ci/setup installs them.
package testregistry

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Need fails the test when a tool is missing (never skips it).
func Need(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed; run .ci/setup (the registry tests need docker-registry, skopeo and htpasswd from apache2-utils)", tool)
		}
	}
}

// Config of a registry; the zero value is a plain registry, anonymous.
type Config struct {
	// Users, if set, turns on htpasswd basic authentication.
	Users map[string]string
	// Token, if set, turns on the bearer token flow with that server.
	Token *TokenServer
	// ProxyOf, if set, makes the registry a pull-through cache of the
	// registry at that URL (read-only).
	ProxyOf string
	// Dir is the storage directory; "": a new one in t.TempDir().
	Dir string
}

// Registry is one docker-registry process.
type Registry struct {
	Host string // 127.0.0.1:PORT
	URL  string // http://127.0.0.1:PORT
	Dir  string // storage, kept across Stop and Start

	t       testing.TB
	cfg     Config
	cfgPath string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start runs a registry until the test ends.
func Start(t testing.TB, cfg Config) *Registry {
	t.Helper()
	Need(t, "docker-registry")
	work := t.TempDir()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(work, "data")
	}
	r := &Registry{t: t, cfg: cfg, Dir: cfg.Dir, logPath: filepath.Join(work, "registry.log"), cfgPath: filepath.Join(work, "config.yml")}
	if len(cfg.Users) > 0 {
		Need(t, "htpasswd")
		writeHtpasswd(t, filepath.Join(work, "htpasswd"), cfg.Users)
	}
	r.Start()
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("registry log (last lines):\n%s", tail(r.Log(), 40))
		}
	})
	return r
}

// Start starts the registry again after Stop, on the same port if it is
// free, else on another (Host and URL then change).
func (r *Registry) Start() {
	r.t.Helper()
	var lastErr error
	for try := 0; try < 5; try++ {
		port := r.port()
		if port == 0 {
			port = freePort(r.t)
		}
		r.Host = "127.0.0.1:" + strconv.Itoa(port)
		r.URL = "http://" + r.Host
		if err := os.WriteFile(r.cfgPath, []byte(r.config()), 0o600); err != nil {
			r.t.Fatal(err)
		}
		if lastErr = r.run(); lastErr == nil {
			return
		}
		r.Host = "" // the port was taken: another
	}
	r.t.Fatalf("docker-registry did not start: %v\n%s", lastErr, tail(r.Log(), 20))
}

func (r *Registry) port() int {
	if r.Host == "" {
		return 0
	}
	_, p, _ := net.SplitHostPort(r.Host)
	n, _ := strconv.Atoi(p)
	return n
}

func (r *Registry) run() error {
	log, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("docker-registry", "serve", r.cfgPath)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("docker-registry exited at start")
		default:
		}
		if resp, err := http.Get(r.URL + "/v2/"); err == nil {
			resp.Body.Close()
			r.cmd, r.done = cmd, done
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Kill()
	<-done
	return fmt.Errorf("docker-registry did not answer on %s within 30s", r.Host)
}

// Stop ends the registry (the storage stays): the upstream goes offline.
func (r *Registry) Stop() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

func (r *Registry) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: imgcache-test-secret
`, r.Dir, r.Host)
	switch {
	case r.cfg.Token != nil:
		fmt.Fprintf(&b, `auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, r.cfg.Token.Realm, r.cfg.Token.Service, r.cfg.Token.Issuer, r.cfg.Token.CertFile)
	case len(r.cfg.Users) > 0:
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: imgcache-test
    path: %s
`, filepath.Join(filepath.Dir(r.cfgPath), "htpasswd"))
	}
	if r.cfg.ProxyOf != "" {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %s\n", r.cfg.ProxyOf)
	}
	return b.String()
}

// Log is what the registry logged so far.
func (r *Registry) Log() string {
	b, _ := os.ReadFile(r.logPath)
	return string(b)
}

// accessRE reads the registry's access log (combined format), which has
// every request; its "response completed" lines leave out those refused
// for authentication.
var accessRE = regexp.MustCompile(`^\S+ - \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d+) (\d+|-) `)

// Request is one request the registry logged as completed.
type Request struct {
	Method, URI string
	Status      int
	Written     int64 // body bytes sent
}

// Requests are the requests the registry answered so far, from its
// access log.
func (r *Registry) Requests() []Request {
	var out []Request
	sc := bufio.NewScanner(strings.NewReader(r.Log()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := accessRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[3])
		n, _ := strconv.ParseInt(m[4], 10, 64)
		out = append(out, Request{Method: m[1], URI: m[2], Status: status, Written: n})
	}
	return out
}

// BlobBytes is the body bytes the registry sent for GETs of blobs.
func (r *Registry) BlobBytes() int64 {
	var n int64
	for _, q := range r.Requests() {
		if q.Method == "GET" && strings.Contains(q.URI, "/blobs/") {
			n += q.Written
		}
	}
	return n
}

// Sent is the body bytes the registry sent for GETs of kind ("blobs" or
// "manifests") in any repository, by the reference the URI ends with (a
// digest, or a tag). A GET the client left early counts what the
// registry wrote before it saw the client go.
func (r *Registry) Sent(kind string) map[string]int64 {
	out := map[string]int64{}
	for _, q := range r.Requests() {
		path, _, _ := strings.Cut(q.URI, "?")
		i := strings.LastIndex(path, "/"+kind+"/")
		if q.Method == "GET" && i >= 0 && strings.HasPrefix(path, "/v2/") {
			out[path[i+len(kind)+2:]] += q.Written
		}
	}
	return out
}

// Count is the number of requests of method whose URI contains part.
func (r *Registry) Count(method, part string) int {
	n := 0
	for _, q := range r.Requests() {
		if q.Method == method && strings.Contains(q.URI, part) {
			n++
		}
	}
	return n
}

func writeHtpasswd(t testing.TB, path string, users map[string]string) {
	var b strings.Builder
	for u, p := range users {
		out, err := exec.Command("htpasswd", "-Bbn", u, p).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		b.WriteString(strings.TrimSpace(string(out)) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
