package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/origin"
)

// upstreamServer is a real HTTP server of images on 127.0.0.1.
type upstreamServer struct {
	url       string
	accessLog string // file with one line per request, bytes sent in bytesField
	proc      *proc
	parseLine func(string) (path string, bytes int64, ok bool)
}

// bytesServed sums the body bytes the server sent, per request path.
func (u *upstreamServer) bytesServed(t *testing.T) map[string]int64 {
	t.Helper()
	f, err := os.Open(u.accessLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, n, ok := u.parseLine(sc.Text()); ok {
			sums[p] += n
		}
	}
	return sums
}

// startNginx serves root with nginx's autoindex (HTML, or JSON if json).
// Each request is logged with its path and the body bytes sent.
func startNginx(t *testing.T, root string, json bool) *upstreamServer {
	t.Helper()
	need(t, "nginx")
	dir := t.TempDir()
	port := freePort(t)
	format := "html"
	if json {
		format = "json"
	}
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
		listen 127.0.0.1:%[2]d;
		root %[3]s;
		autoindex on;
		autoindex_format %[4]s;
	}
}
`, dir, port, root, format)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "", "nginx", "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr)
	return &upstreamServer{
		url:       "http://" + addr + "/",
		accessLog: filepath.Join(dir, "access.log"),
		proc:      p,
		parseLine: func(l string) (string, int64, bool) {
			f := strings.Fields(l)
			if len(f) < 4 || f[0] != "GET" {
				return "", 0, false
			}
			n, err := strconv.ParseInt(f[3], 10, 64)
			return strings.TrimPrefix(f[1], "/"), n, err == nil
		},
	}
}

// startOrigin serves root with imgcache serve.
func startOrigin(t *testing.T, root string) *upstreamServer {
	t.Helper()
	log := filepath.Join(t.TempDir(), "access.log")
	p := start(t, "serving ", bin, "serve", "--listen", "127.0.0.1:0", "--access-log", log, root)
	line := p.readyLine("serving ")
	url := line[strings.LastIndex(line, " ")+1:]
	return &upstreamServer{url: url, accessLog: log, proc: p, parseLine: parseOriginLog}
}

// mount is a running imgcache mount.
type mount struct {
	dir      string // mountpoint
	cacheDir string
	proc     *proc
}

// startMount mounts a cache of upstream; extra flags go before the
// arguments. The mount is unmounted (SIGTERM) at cleanup.
func startMount(t *testing.T, upstream, cacheDir string, flags ...string) *mount {
	t.Helper()
	mnt := t.TempDir()
	if cacheDir == "" {
		cacheDir = t.TempDir()
	}
	args := append([]string{"mount", "--cache-dir", cacheDir}, flags...)
	args = append(args, upstream, mnt)
	p := start(t, "ready: ", bin, args...)
	return &mount{dir: mnt, cacheDir: cacheDir, proc: p}
}

func (m *mount) path(name string) string { return filepath.Join(m.dir, name) }

// unmount stops the daemon with SIGTERM and checks it exits 0 and leaves
// nothing mounted.
func (m *mount) unmount(t *testing.T) {
	t.Helper()
	if err := m.proc.stop(); err != nil {
		t.Fatalf("imgcache mount exited with %v after SIGTERM", err)
	}
	if isMounted(t, m.dir) {
		t.Fatalf("%s still mounted after the daemon exited", m.dir)
	}
}

func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	return mountInfo(t, dir) != ""
}

// mountInfo returns the line of /proc/self/mountinfo of the mount at dir
// (its mount and superblock options among others), or "" if there is none.
func mountInfo(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return l
		}
	}
	return ""
}

// parseOriginLog reads a line of imgcache serve's access log (a JSON
// origin.AccessRecord).
func parseOriginLog(line string) (path string, bytes int64, ok bool) {
	var r origin.AccessRecord
	if err := json.Unmarshal([]byte(line), &r); err != nil || r.Method != "GET" {
		return "", 0, false
	}
	return strings.TrimPrefix(r.Path, "/"), r.Bytes, true
}
