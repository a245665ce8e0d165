package httpclient

import (
	"net/http"
	"testing"
	"time"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 10-29/100", 10, 29, 100, true},
		{"bytes 10-29/*", 10, 29, -1, true},
		{" bytes 1-2/3 ", 1, 2, 3, true},
		{"bytes 10-29/29", 0, 0, 0, false},
		{"bytes 29-10/100", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"bytes -1-2/3", 0, 0, 0, false},
		{"bytes +1-2/3", 0, 0, 0, false},
		{"bytes 1-2/-3", 0, 0, 0, false},
		{"items 1-2/3", 0, 0, 0, false},
		{"bytes 1-99999999999999999999/*", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		first, last, total, err := ParseContentRange(tc.in)
		if (err == nil) != tc.ok || tc.ok && (first != tc.first || last != tc.last || total != tc.total) {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, %v", tc.in, first, last, total, err)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1", "bytes 10-29/*", "bytes */5", "bytes 9223372036854775806-9223372036854775806/9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, err := ParseContentRange(s)
		if err != nil {
			return
		}
		if first < 0 || last < first || total < -1 || total >= 0 && last >= total {
			t.Fatalf("ParseContentRange(%q) = %d, %d, %d", s, first, last, total)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"3": 3 * time.Second, "": 0, "-1": 0, "soon": 0, "99999999": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := ParseRetryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}
