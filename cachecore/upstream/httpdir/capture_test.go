//go:build capture

package httpdir

// This file is not part of the normal test run. It captures the listing
// fixtures under testdata/listings from real servers serving the fixture
// tree (tree_test.go), and is kept to show where they came from and to
// capture them again:
//
//	apt-get install -y nginx apache2 python3
//	go test -tags capture -run TestCaptureListings ./cachecore/upstream/httpdir/
//
// TestRealServers runs List and Fetch against the same servers.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type realServer struct {
	name  string
	start func(t *testing.T, root string, port int) *exec.Cmd
}

func TestCaptureListings(t *testing.T) {
	root := readableTempDir(t)
	buildTree(t, root)
	for _, srv := range realServers {
		t.Run(srv.name, func(t *testing.T) {
			port := freePort(t)
			cmd := srv.start(t, root, port)
			defer stop(t, cmd)
			waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
			for _, dir := range treeDirs {
				captureDir(t, srv.name, port, dir)
			}
		})
	}
}

func TestRealServers(t *testing.T) {
	root := readableTempDir(t)
	buildTree(t, root)
	for _, srv := range realServers {
		t.Run(srv.name, func(t *testing.T) {
			port := freePort(t)
			cmd := srv.start(t, root, port)
			defer stop(t, cmd)
			waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
			u := newTestUpstream(t, fmt.Sprintf("http://127.0.0.1:%d", port), Options{})
			got, err := u.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checkCatalog(t, got, wantTreeCatalog())
			for _, e := range got {
				data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(e.Name)))
				if err != nil {
					t.Fatal(err)
				}
				off, n := e.Size/3, e.Size/2
				r, err := u.Fetch(context.Background(), e, off, n)
				if err != nil {
					t.Fatalf("Fetch %s: %v", e.Name, err)
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(b, data[off:off+n]) {
					t.Errorf("Fetch %s [%d, +%d): %d bytes, %v", e.Name, off, n, len(b), err)
				}
			}
		})
	}
}

var realServers = []realServer{
	{"nginx-html", func(t *testing.T, root string, port int) *exec.Cmd { return startNginx(t, root, port, "html") }},
	{"nginx-json", func(t *testing.T, root string, port int) *exec.Cmd { return startNginx(t, root, port, "json") }},
	{"apache-table", func(t *testing.T, root string, port int) *exec.Cmd {
		return startApache(t, root, port, "FancyIndexing HTMLTable VersionSort NameWidth=* DescriptionWidth=* Charset=UTF-8")
	}},
	{"apache-fancy", func(t *testing.T, root string, port int) *exec.Cmd {
		return startApache(t, root, port, "FancyIndexing NameWidth=* Charset=UTF-8")
	}},
	{"apache-plain", func(t *testing.T, root string, port int) *exec.Cmd {
		return startApache(t, root, port, "Charset=UTF-8")
	}},
	{"python", startPython},
}

func captureDir(t *testing.T, server string, port int, dir string) {
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if dir != "" {
		u += escapePath(dir) + "/"
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %s", u, err, resp.Status)
	}
	ext := "html"
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		ext = "json"
	}
	out := filepath.Join("testdata", "listings", server, filepath.FromSlash(dir), "index."+ext)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, body, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes, Content-Type %s", out, len(body), resp.Header.Get("Content-Type"))
}

// readableTempDir is a temporary directory that servers running as
// another user (Apache's workers) can read.
func readableTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "imgcache-capture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startNginx(t *testing.T, root string, port int, format string) *exec.Cmd {
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
	include /etc/nginx/mime.types;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	access_log off;
	server {
		listen 127.0.0.1:%[2]d;
		root %[3]s;
		autoindex on;
		autoindex_format %[4]s;
	}
}
`, dir, port, root, format)
	return run(t, dir, conf, "/usr/sbin/nginx", "-p", dir, "-c", filepath.Join(dir, "conf"), "-e", filepath.Join(dir, "error.log"))
}

func startApache(t *testing.T, root string, port int, indexOptions string) *exec.Cmd {
	dir := t.TempDir()
	mods := "/usr/lib/apache2/modules"
	conf := fmt.Sprintf(`ServerName 127.0.0.1
Listen 127.0.0.1:%[2]d
PidFile %[1]s/httpd.pid
ErrorLog %[1]s/error.log
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
User www-data
Group www-data
LoadModule mpm_event_module %[4]s/mod_mpm_event.so
LoadModule authz_core_module %[4]s/mod_authz_core.so
LoadModule dir_module %[4]s/mod_dir.so
LoadModule autoindex_module %[4]s/mod_autoindex.so
LoadModule mime_module %[4]s/mod_mime.so
TypesConfig /etc/mime.types
DocumentRoot "%[3]s"
<Directory "%[3]s">
	Options +Indexes
	Require all granted
</Directory>
IndexOptions %[5]s
`, dir, port, root, mods, indexOptions)
	return run(t, dir, conf, "/usr/sbin/apache2", "-f", filepath.Join(dir, "conf"), "-DFOREGROUND")
}

func startPython(t *testing.T, root string, port int) *exec.Cmd {
	return run(t, "", "", "python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", root, fmt.Sprint(port))
}

// run writes conf (if any) to dir/conf and starts the server.
func run(t *testing.T, dir, conf string, argv ...string) *exec.Cmd {
	if conf != "" {
		if err := os.WriteFile(filepath.Join(dir, "conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// stop ends the server by its pid and waits for it. Apache's workers
// leave with their parent on SIGTERM.
func stop(t *testing.T, cmd *exec.Cmd) {
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Error(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitTCP(t *testing.T, addr string) {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}
