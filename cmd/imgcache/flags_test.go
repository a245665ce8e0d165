package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestParseSize(t *testing.T) {
	for s, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "512K": 512 << 10, "4M": 4 << 20, "20G": 20 << 30, "1T": 1 << 40,
		"1.5G": 3 << 29, "0.5K": 512, "16MiB": 16 << 20, "16mb": 16 << 20, "512B": 512, " 2g ": 2 << 30, "20 GiB": 20 << 30,
	} {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "nan", "NaN", "inf", "+Inf", "-1", "-1M", "+5", "1e9", "0x10", "0.5", "0.1K", "1.", ".5G",
		"1_000", "lots", "5X", "M", "1048577T", "99999999999999999999"} {
		if got, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", s, got)
		}
	}
}

func TestParsePercent(t *testing.T) {
	for s, want := range map[string]float64{"90": 90, "100": 100, "0.5": 0.5, "87.5%": 87.5} {
		if got, err := parsePercent(s); err != nil || got != want {
			t.Errorf("parsePercent(%q) = %g, %v; want %g", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "0.0", "100.5", "101", "nan", "inf", "-5", "1e1", "lots"} {
		if got, err := parsePercent(s); err == nil {
			t.Errorf("parsePercent(%q) = %g, want an error", s, got)
		}
	}
}

// TestBadFlagValues: every value a command would misread (a zero that
// would quietly mean the default, a negative duration, NaN) is a
// one-line usage error, exit status 2, naming the flag. The mountpoint
// does not exist, so a value that is wrongly taken fails later, with
// exit status 1.
func TestBadFlagValues(t *testing.T) {
	for _, c := range [][]string{
		{"mount", "--max-size", "nan"},
		{"mount", "--max-size", "0.5"},
		{"mount", "--max-size", "-1"},
		{"mount", "--max-size", "20"},
		{"mount", "--max-size", "1e12"},
		{"mount", "--read-timeout", "-1s"},
		{"mount", "--read-timeout", "0"},
		{"mount", "--catalog-ttl", "-1s"},
		{"mount", "--catalog-ttl", "0"},
		{"mount", "--catalog-ttl", "1ms"},
		{"mount", "--flush-interval", "-1s"},
		{"mount", "--flush-interval", "0"},
		{"mount", "--retry-max", "-5"},
		{"mount", "--retry-max", "0x10"},
		{"mount", "--connect-timeout", "0"},
		{"mount", "--header-timeout", "-1s"},
		{"mount", "--stall-timeout", "0"},
		{"mount", "--chunk-size", "0"},
		{"mount", "--chunk-size", "100001"},
		{"mount", "--chunk-size", "128M"},
		{"mount", "--high-water", "0"},
		{"mount", "--high-water", "nan"},
		{"mount", "--high-water", "150"},
		{"mount", "--low-water", "-10"},
		{"mount", "--low-water", "95"}, // above the default high water of 90
		{"mount", "--stall-time", "-1s"},
		{"mount", "--stall-time", "1ms"},
		{"mount", "--prefetchers", "-1"},
		{"mount", "--prefetch-rate", "-1M"},
		{"mount", "--scrub-rate", "0"},
		{"mount", "--scrub-interval", "-1s"},
		{"mount", "--cache-dir", ""},
		{"mount", "--mirror", ""},
		{"serve", "--listen", ""},
		{"serve", "--listen", "8080"},
		{"serve", "--listen", "127.0.0.1:99999"},
		{"ls", "--cache-dir", ""},
		{"evict", "--cache-dir", ""},
	} {
		args := c
		switch c[0] {
		case "mount":
			args = append(args, "http://127.0.0.1:1/", "/nonexistent/imgcache-test-mnt")
		case "serve":
			args = append(args, "/nonexistent/imgcache-test-dir")
		case "evict":
			args = append(args, "a.img")
		}
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		msg := stderr.String()
		if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "--"+strings.TrimPrefix(c[1], "--")) {
			t.Errorf("imgcache %q: exit %d, stderr %q; want exit 2 and one line naming %s", c, code, msg, c[1])
		}
	}
}

// TestGoodFlagValues: the values the help offers parse, and the zeros
// that mean "off" are taken as such.
func TestGoodFlagValues(t *testing.T) {
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tf := addTrustFlags(fs)
	integrity := integrityFlags(fs)
	lifecycle := lifecycleFlags(fs)
	err := fs.Parse([]string{"--max-size", "0", "--retry-max", "0", "--scrub-interval", "0", "--stall-time", "0",
		"--prefetchers", "0", "--prefetch-rate", "0", "--read-timeout", "1ms", "--flush-interval", "10ms",
		"--high-water", "95", "--low-water", "95"})
	if err != nil {
		t.Fatal(err)
	}
	lc, err := lifecycle()
	if err != nil || lc.MaxSize != 0 || lc.StallTime >= 0 || lc.Prefetchers >= 0 || lc.PrefetchRate != 0 || lc.HighWater != 0.95 {
		t.Fatalf("lifecycle %+v, %v", lc, err)
	}
	integ, err := integrity()
	if err != nil || integ.ScrubInterval != 0 {
		t.Fatalf("integrity %+v, %v", integ, err)
	}
	if *tf.retryMax != 0 {
		t.Fatalf("retry-max %d", *tf.retryMax)
	}
}

// TestHelpSaysWhatZeroMeans: where 0 is taken, the help says what it
// means.
func TestHelpSaysWhatZeroMeans(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"mount", "--help"}, &out, io.Discard); code != 0 {
		t.Fatalf("mount --help: exit %d", code)
	}
	help := out.String()
	for _, f := range []string{"max-size", "retry-max", "scrub-interval", "stall-time", "prefetchers", "prefetch-rate"} {
		i := strings.Index(help, "  --"+f+" ")
		if i < 0 {
			t.Fatalf("help lacks --%s:\n%s", f, help)
		}
		entry, _, _ := strings.Cut(help[i+1:], "  --")
		if !strings.Contains(entry, "0: ") {
			t.Errorf("help of --%s does not say what 0 means: %q", f, entry)
		}
	}
}
