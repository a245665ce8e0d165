package integration

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The servers of the fleet tests: an nginx origin that logs what it sent
// of each image, and the cache tiers of docs/fleet.md (nginx, Squid),
// started with the configurations written there.

// fleetOrigin is an nginx origin whose access log records, for each GET,
// the part of the image it sent.
type fleetOrigin struct {
	url, addr string
	log       string // the access log
}

func startFleetOrigin(t *testing.T, root string) *fleetOrigin {
	t.Helper()
	dir, port := t.TempDir(), freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	startNginxConf(t, dir, `
	log_format origin '$request_method $uri $status $body_bytes_sent "$sent_http_content_range" "$http_range"';
	access_log `+dir+`/access.log origin;
	sendfile on;
	server {
		listen `+addr+`;
		root `+root+`;
		autoindex on;
	}`)
	waitTCP(t, addr)
	return &fleetOrigin{url: "http://" + addr + "/", addr: addr, log: filepath.Join(dir, "access.log")}
}

// startNginxConf runs nginx in the foreground with the directives of an
// http block, its files in dir.
func startNginxConf(t *testing.T, dir, httpBlock string) *proc {
	t.Helper()
	need(t, "nginx")
	conf := fmt.Sprintf(`
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, httpBlock)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return start(t, "", "nginx", "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
}

// span is a part of an image the origin sent: n bytes from off.
type span struct{ off, n int64 }

var contentRange = regexp.MustCompile(`^bytes (\d+)-\d+/\d+$`)

// sent returns, by image name, the parts of it the origin has sent.
func (o *fleetOrigin) sent(t *testing.T) map[string][]span {
	t.Helper()
	b, err := os.ReadFile(o.log)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]span{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := logFields(l)
		if len(f) < 5 || f[0] != "GET" || (f[2] != "200" && f[2] != "206") {
			continue
		}
		name := strings.TrimPrefix(f[1], "/")
		n, _ := strconv.ParseInt(f[3], 10, 64)
		var off int64
		if f[2] == "206" {
			m := contentRange.FindStringSubmatch(f[4])
			if m == nil {
				t.Fatalf("origin log: a 206 reply without one Content-Range: %s", l)
			}
			off, _ = strconv.ParseInt(m[1], 10, 64)
		}
		out[name] = append(out[name], span{off, n})
	}
	return out
}

// tierRequest is a request that reached the tier.
type tierRequest struct {
	line                 string // as logged
	method, path         string
	rng, ifRange         string // the Range and If-Range headers, "" if none
	cacheControl, pragma string
}

type tier struct {
	url      string // for the mounts' UPSTREAM (reverse proxy) or --proxy (forward proxy)
	proc     *proc
	requests func(t *testing.T) []tierRequest
}

// fleetConfig returns the code block of docs/fleet.md that follows
// <!-- fleet-test: name -->, with each of replace's old strings (which
// must be there) replaced by its new one.
func fleetConfig(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile("../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- fleet-test: "+name+" -->")
	if !ok {
		t.Fatalf("docs/fleet.md has no configuration marked %q", name)
	}
	_, rest, _ = strings.Cut(rest, "```")
	_, rest, _ = strings.Cut(rest, "\n") // the fence's language
	conf, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("docs/fleet.md: the %q block does not end", name)
	}
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(conf, replace[i]) {
			t.Fatalf("docs/fleet.md: the %q block has no %q to replace", name, replace[i])
		}
		conf = strings.ReplaceAll(conf, replace[i], replace[i+1])
	}
	return conf
}

// startNginxTier is docs/fleet.md's nginx tier in front of o: a reverse
// proxy the mounts take as their upstream.
func startNginxTier(t *testing.T, o *fleetOrigin) *tier {
	t.Helper()
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := fleetConfig(t, "nginx-tier",
		"/var/cache/nginx/images", dir+"/cache",
		"server origin.example:80;", "server "+o.addr+";",
		"listen 80;", "listen "+addr+";")
	p := startNginxConf(t, dir, `
	log_format tier '$request_method $uri $status $body_bytes_sent "$http_range" "$http_if_range" "$http_cache_control" "$http_pragma" $upstream_cache_status';
	access_log `+dir+`/access.log tier;
`+conf)
	waitTCP(t, addr)
	log := filepath.Join(dir, "access.log")
	return &tier{url: "http://" + addr + "/", proc: p, requests: func(t *testing.T) []tierRequest {
		return parseTierLog(t, log, func(s string) string {
			s = strings.ReplaceAll(s, `\x22`, `"`) // nginx escapes quotes in values
			if s == "-" {
				return ""
			}
			return s
		})
	}}
}

// startSquidTier is docs/fleet.md's Squid: a forward proxy the mounts
// reach with --proxy. Squid is started as root and drops to the proxy
// user, so its directory is its own, outside the test's (root-only)
// temporary directories.
func startSquidTier(t *testing.T) *tier {
	t.Helper()
	need(t, "squid")
	dir, err := os.MkdirTemp("", "imgcache-squid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pu, err := user.Lookup("proxy")
	if err != nil {
		t.Fatalf("Squid's user: %v", err)
	}
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fleetConfig(t, "squid-tier",
		"http_port 3128", fmt.Sprintf("http_port 127.0.0.1:%d", port),
		"cache_dir ufs /var/spool/squid 500000 16 256", "cache_dir ufs "+dir+"/cache 4096 16 256")
	conf += `
# the test's own files and ports
pid_filename ` + dir + `/squid.pid
cache_effective_user proxy
visible_hostname imgcache-fleet-test
logformat fleet %rm %rp %>Hs %<st %#{Range}>h %#{If-Range}>h %#{Cache-Control}>h %#{Pragma}>h %Ss
access_log stdio:` + dir + `/access.log fleet
cache_log ` + dir + `/cache.log
cache_store_log none
coredump_dir ` + dir + `
netdb_filename none
icp_port 0
htcp_port 0
pinger_enable off
shutdown_lifetime 0 seconds
`
	confPath := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "squid", "-z", "-N", "-f", confPath) // makes the cache directories
	p := start(t, "Finished rebuilding storage from disk", "squid", "-N", "-d", "1", "-f", confPath)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port))
	log := filepath.Join(dir, "access.log")
	return &tier{url: fmt.Sprintf("http://127.0.0.1:%d", port), proc: p, requests: func(t *testing.T) []tierRequest {
		return parseTierLog(t, log, func(s string) string {
			if s == "-" {
				return ""
			}
			u, err := url.PathUnescape(s)
			if err != nil {
				t.Fatalf("Squid log value %q: %v", s, err)
			}
			return u
		})
	}}
}

// logFields splits an access log line at spaces, except inside double
// quotes, which it removes.
func logFields(l string) []string {
	var out []string
	for l = strings.TrimSpace(l); l != ""; l = strings.TrimLeft(l, " ") {
		end := " "
		if l[0] == '"' {
			l, end = l[1:], `"`
		}
		f, rest, _ := strings.Cut(l, end)
		out = append(out, f)
		l = rest
	}
	return out
}

// parseTierLog reads a tier's access log: method, path, status, bytes,
// then Range, If-Range, Cache-Control, Pragma (decoded by value), ...
func parseTierLog(t *testing.T, log string, value func(string) string) []tierRequest {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tierRequest
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fs := logFields(l)
		if len(fs) < 8 {
			t.Fatalf("tier log line %q", l)
		}
		for i := 4; i < 8; i++ {
			fs[i] = value(fs[i])
		}
		out = append(out, tierRequest{line: l, method: fs[0], path: fs[1], rng: fs[4], ifRange: fs[5], cacheControl: fs[6], pragma: fs[7]})
	}
	return out
}
