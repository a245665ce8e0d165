package main

import (
	"slices"
	"strings"
	"testing"
)

func TestFstabForm(t *testing.T) {
	for _, tc := range []struct {
		argv0 string
		args  []string
		want  bool
	}{
		{"imgcache", []string{"http://x/", "/mnt", "-o", "rw"}, true},
		{"/usr/bin/imgcache", []string{"http://x/", "/mnt"}, true},
		{"/sbin/mount.imgcache", []string{"http://x/", "/mnt", "-o", "rw"}, true},
		{"/sbin/mount.imgcache", []string{"mount", "/mnt"}, true},
		{"imgcache", []string{"mount", "http://x/", "/mnt"}, false},
		{"imgcache", []string{"ls"}, false},
		{"imgcache", []string{"help", "mount"}, false},
		{"imgcache", []string{"--help"}, false},
		{"imgcache", []string{"http://x/"}, false},
		{"imgcache", []string{"images.example", "/mnt", "-o", "rw,dev,suid"}, true},
		{"imgcache", []string{"mout", "http://x/", "/mnt"}, false}, // a mistyped command
		{"imgcache", []string{"__complete", "pr"}, false},
		{"imgcache", []string{"__complete", "mount", ""}, false},
	} {
		if got := fstabForm(tc.argv0, tc.args, isCommandName); got != tc.want {
			t.Errorf("fstabForm(%q, %q) = %v, want %v", tc.argv0, tc.args, got, tc.want)
		}
	}
}

func TestSplitOptions(t *testing.T) {
	got := splitOptions(`rw,,cache_dir=/c,mirror="http://a/,http://b/",allow_other`)
	want := []string{"rw", "cache_dir=/c", `mirror="http://a/,http://b/"`, "allow_other"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestTranslateOptions: what mount.fuse3 passes for an fstab line
// becomes imgcache mount's flags; generic options vanish.
func TestTranslateOptions(t *testing.T) {
	h, err := parseHelperArgs([]string{"http://images.example/", "/mnt/images", "-o",
		"rw,noexec,nosuid,nodev,cache_dir=/var/cache/imgcache,max_size=20G,allow_other,_netdev,nofail,x-systemd.automount,comment=x,mirror=\"http://m/,x\",chunk-size=4M,log_file=/var/log/i.log,dev,suid", "-n", "-v"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := translate(h, mountCmd().Flags())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--cache-dir=/var/cache/imgcache", "--max-size=20G", "--allow-other=true", "--mirror=http://m/,x",
		"--chunk-size=4M", "--", "http://images.example/", "/mnt/images"}
	if !slices.Equal(m.args, want) || m.logFile != "/var/log/i.log" || !m.verbose {
		t.Fatalf("got %q, log %q, verbose %v; want %q", m.args, m.logFile, m.verbose, want)
	}
}

func TestTranslateRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"http://x/", "/m", "-o", "bogus=1"}, `unknown option "bogus=1"`},
		{[]string{"http://x/", "/m", "-o", "uid=1000"}, `unknown option "uid=1000"`},
		{[]string{"http://x/", "/m", "-o", "max_size=lots"}, "option max_size=lots: "},
		{[]string{"http://x/", "/m", "-o", "max_size"}, "option max_size wants a value: max_size=MAX-SIZE"},
		{[]string{"http://x/", "/m", "-o", "catalog_ttl=0"}, "option catalog_ttl=0: "},
		{[]string{"http://x/", "/m", "-o", "log_file="}, "option log_file wants a file"},
		{[]string{"images.example", "/m"}, `source "images.example" is not a URL of the images`},
		{[]string{"/dev/sda1", "/m", "-o", "rw"}, `source "/dev/sda1" is not`},
		{[]string{"ftp://images.example/", "/m"}, `source "ftp://images.example/" is not`},
		{[]string{"http:///images", "/m"}, `source "http:///images" is not`},
		{[]string{"http://a.example/,b.example", "/m"}, `source "http://a.example/,b.example" is not`},
		{[]string{"ftp://u:secret@x/", "/m"}, `source "ftp://x/" is not`},
	} {
		h, err := parseHelperArgs(tc.args)
		if err == nil {
			_, err = translate(h, mountCmd().Flags())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	for _, args := range [][]string{{"http://x/"}, {"http://x/", "/m", "/n"}, {"http://x/", "/m", "-o"},
		{"http://x/", "/m", "-t", "fuse.sshfs"}, {"http://x/", "/m", "-N", "/proc/1/ns/mnt"}, {"http://x/", "/m", "-x"}} {
		if _, err := parseHelperArgs(args); err == nil {
			t.Errorf("parseHelperArgs(%q) took it", args)
		}
	}
}

func TestTranslateSloppy(t *testing.T) {
	h, err := parseHelperArgs([]string{"http://x/", "/m", "-s", "-o", "bogus,max_size=1G"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := translate(h, mountCmd().Flags())
	if err != nil || !slices.Equal(m.ignored, []string{"bogus"}) || m.args[0] != "--max-size=1G" {
		t.Fatalf("%v %q %q", err, m.ignored, m.args)
	}
}

func TestMountSource(t *testing.T) {
	for in, want := range map[string]string{
		"http://images.example/":               "http://images.example/",
		"http://a.example/,https://b.example/": "http://a.example/,https://b.example/",
		"http://u:secret@images.example/":      "",
		"http://a/,https://u@b/":               "",
	} {
		if got := mountSource(in); got != want {
			t.Errorf("mountSource(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"--max-size=20G", "--mirror=http://u:pw@m.example/,http://n.example/", "--proxy=http://p:pw@proxy:3128",
		"--", "https://user:secret@images.example/x/", "/mnt/images"})
	want := []string{"--max-size=20G", "--mirror=http://m.example/,http://n.example/", "--proxy=http://proxy:3128",
		"--", "https://images.example/x/", "/mnt/images"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestCheckSourceTakesEveryScheme(t *testing.T) {
	for _, s := range []string{"http://a/", "https://a/,https://b/", "oci://registry.example", "oci+http://127.0.0.1:5000",
		"simplestreams+https://images.example/", "simplestreams+http://127.0.0.1:8080/"} {
		if err := checkSource(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}
