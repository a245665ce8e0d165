package teststreams

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nginx is a real nginx serving a directory on 127.0.0.1, started by a
// test and stopped at its cleanup. Every request is logged with its path
// and the body bytes sent.
type Nginx struct {
	URL  string // "http://127.0.0.1:PORT/" or "https://..."
	Addr string // "127.0.0.1:PORT"

	t    testing.TB
	dir  string // its prefix: configuration, logs, pid
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// NginxOptions configure StartNginx.
type NginxOptions struct {
	// Cert, if set, makes it serve https with TLS 1.3 only, as LXD's
	// client asks.
	Cert *Cert
	// Server holds extra directives for the server block.
	Server string
}

// StartNginx serves root. It fails the test if nginx is not installed
// (.ci/setup installs it) or does not start.
func StartNginx(t testing.TB, root string, o NginxOptions) *Nginx {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("nginx is not installed; run .ci/setup")
	}
	n := &Nginx{t: t, dir: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.Addr = ln.Addr().String()
	ln.Close()
	listen, scheme, tlsConf := n.Addr, "http", ""
	if o.Cert != nil {
		listen, scheme = n.Addr+" ssl", "https"
		tlsConf = fmt.Sprintf("ssl_certificate %s;\n\t\tssl_certificate_key %s;\n\t\tssl_protocols TLSv1.3;", o.Cert.CertFile, o.Cert.KeyFile)
	}
	n.URL = scheme + "://" + n.Addr + "/"
	conf := fmt.Sprintf(`
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	log_format bytes '$request_method $uri $status $body_bytes_sent "$http_range"';
	access_log %[1]s/access.log bytes;
	sendfile on;
	server {
		listen %[2]s;
		root %[3]s;
		%[4]s
		%[5]s
	}
}
`, n.dir, listen, root, tlsConf, o.Server)
	n.conf = filepath.Join(n.dir, "nginx.conf")
	if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

// Start starts nginx again after Stop, on the same address.
func (n *Nginx) Start() {
	n.t.Helper()
	n.cmd = exec.Command("nginx", "-p", n.dir, "-c", n.conf, "-e", filepath.Join(n.dir, "error.log"))
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, os.Stderr
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start nginx: %v", err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", n.Addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-n.done:
			log, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
			n.t.Fatalf("nginx exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			n.Stop()
			n.t.Fatalf("nginx is not listening on %s after 30s", n.Addr)
		}
	}
}

// Stop stops nginx (SIGTERM, then SIGKILL after 20s) and waits for it;
// it does nothing if nginx is not running.
func (n *Nginx) Stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}

// Request is one line of the access log.
type Request struct {
	Method, Path string
	Status       int
	Bytes        int64
	Range        string // the Range header, "" if none
}

// Requests returns every request served so far.
func (n *Nginx) Requests() []Request {
	n.t.Helper()
	f, err := os.Open(filepath.Join(n.dir, "access.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		n.t.Fatal(err)
	}
	defer f.Close()
	var reqs []Request
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 5 {
			continue
		}
		status, _ := strconv.Atoi(fl[2])
		bytes, _ := strconv.ParseInt(fl[3], 10, 64)
		rng := strings.Trim(strings.Join(fl[4:], " "), `"`)
		if rng == "-" {
			rng = ""
		}
		reqs = append(reqs, Request{Method: fl[0], Path: strings.TrimPrefix(fl[1], "/"), Status: status, Bytes: bytes, Range: rng})
	}
	return reqs
}

// WaitRequests returns the requests served so far once there are at
// least n: nginx logs a request after its reply, so a client can be done
// before the line is written. It fails the test after 30s.
func (n *Nginx) WaitRequests(k int) []Request {
	n.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if reqs := n.Requests(); len(reqs) >= k || time.Now().After(deadline) {
			if len(reqs) < k {
				n.t.Fatalf("nginx logged %d requests in 30s, want %d", len(reqs), k)
			}
			return reqs
		}
	}
}

// BytesServed sums the body bytes sent per path (GET requests).
func (n *Nginx) BytesServed() map[string]int64 {
	sums := map[string]int64{}
	for _, r := range n.Requests() {
		if r.Method == "GET" {
			sums[r.Path] += r.Bytes
		}
	}
	return sums
}
