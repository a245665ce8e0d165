package mount

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream/failover"
)

func TestSplitUpstreams(t *testing.T) {
	got := splitUpstreams(" http://a/ ,http://b/,, ", []string{"http://c/"})
	if want := []string{"http://a/", "http://b/", "http://c/"}; !slices.Equal(got, want) {
		t.Fatalf("%q, want %q", got, want)
	}
}

func TestOpenUpstreams(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	up, _, err := openUpstreams([]string{"http://u:hunter2@a/", "https://b/"}, Trust{Insecure: true}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := up.(*failover.Upstream); !ok {
		t.Fatalf("two URLs made a %T, want a failover upstream", up)
	}
	if up.URL("") != "http://a/" {
		t.Fatalf("identity %q, want the first URL without credentials", up.URL(""))
	}
	if l := logs.String(); !strings.Contains(l, "VERIFICATION IS OFF") || !strings.Contains(l, "process list") || strings.Contains(l, "hunter2") {
		t.Fatalf("log:\n%s", l)
	}
	_, _, err = openUpstreams([]string{"ftp://u:hunter2@a/"}, Trust{}, nil, log)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("ftp URL: %v", err)
	}
	if _, _, err := openUpstreams(nil, Trust{}, nil, log); err == nil {
		t.Fatal("no URL accepted")
	}
	if _, _, err := openUpstreams([]string{"http://a/"}, Trust{}, []string{"library/alpine"}, log); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Fatalf("--repo with an http upstream: %v", err)
	}
	for raw, want := range map[string]string{
		"oci+http://127.0.0.1:5000":             "*oci.Upstream",
		"oci://registry.example":                "*oci.Upstream",
		"simplestreams+https://images.example/": "*simplestreams.Upstream",
		"simplestreams+http://127.0.0.1:8080/":  "*simplestreams.Upstream",
	} {
		up, _, err := openUpstreams([]string{raw}, Trust{}, nil, log)
		if err != nil || fmt.Sprintf("%T", up) != want {
			t.Fatalf("%s made %T, %v; want a %s", raw, up, err, want)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		p, dir string
		want   bool
	}{
		{"/a/b", "/a", true}, {"/a", "/a", true}, {"/ab", "/a", false}, {"/a", "/a/b", false}, {"/x/../a/b", "/a", true},
	} {
		if got := within(c.p, c.dir); got != c.want {
			t.Errorf("within(%q, %q) = %v", c.p, c.dir, got)
		}
	}
}

func TestNestedFollowsLinks(t *testing.T) {
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	os.Mkdir(mnt, 0o755)
	link := filepath.Join(base, "link")
	if err := os.Symlink(mnt, link); err != nil {
		t.Fatal(err)
	}
	if !nested(mnt, filepath.Join(link, "cache", "new")) {
		t.Fatal("a cache directory inside the mountpoint through a link was allowed")
	}
	if !nested(filepath.Join(link, "sub"), mnt) {
		t.Fatal("a mountpoint inside the cache directory through a link was allowed")
	}
	if nested(mnt, filepath.Join(base, "cache")) {
		t.Fatal("siblings refused")
	}
}
