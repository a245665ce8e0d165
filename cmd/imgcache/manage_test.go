package main

import "testing"

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1023: "1023", 1024: "1K", 1536: "1.5K", 10 << 20: "10M", 3<<30 + 1<<29: "3.5G",
		1000 << 20: "1000M", 1 << 40: "1T", 12345678: "12M",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		part, whole int64
		want        string
	}{{0, 10, "0%"}, {5, 10, "50%"}, {999, 1000, "99%"}, {1000, 1000, "100%"}, {0, 0, "100%"}, {1, 1000, "0%"}} {
		if got := percent(c.part, c.whole); got != c.want {
			t.Errorf("percent(%d, %d) = %q, want %q", c.part, c.whole, got, c.want)
		}
	}
}
