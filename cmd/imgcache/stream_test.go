package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/imgcache/imgcache/control"
)

// TestJSONArrayAsPrintJSON: the streamed array is the text printJSON
// gives for the whole slice, for none, one and many values.
func TestJSONArrayAsPrintJSON(t *testing.T) {
	imgs := []control.Image{
		{Name: "a.img", Size: 1, State: "absent"},
		{Name: "sub/b \"c\".img", Size: 2 << 30, CachedBytes: 5, State: "partial", LastAccess: time.Unix(1e9, 0).UTC()},
		{Name: "ünï.img", Digest: "sha256:00", Pinned: true},
	}
	for n := range len(imgs) + 1 {
		var want, got bytes.Buffer
		if err := printJSON(&want, append([]control.Image{}, imgs[:n]...)); err != nil {
			t.Fatal(err)
		}
		a := newJSONArray(&got)
		for _, img := range imgs[:n] {
			if err := a.add(img); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.close(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%d values:\n%s\nwant\n%s", n, got.String(), want.String())
		}
	}
}

// TestTableAsTabwriter: rows that fit in one block print as tabwriter
// prints them; in later blocks a column keeps the widest cell so far and
// widens for a wider one.
func TestTableAsTabwriter(t *testing.T) {
	rows := []string{"NAME\tSIZE\tCACHED\t\tSTATE", "a\t1\t2\t50%\tx", "bbbb\t1\t\t\t", "ünï\t10 MiB\t3\t\tverified"}
	var want, got bytes.Buffer
	tw := tabwriter.NewWriter(&want, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	tw.Flush()
	tb := newTable(&got)
	for _, r := range rows {
		tb.row(r)
	}
	tb.flush()
	if got.String() != want.String() {
		t.Fatalf("table:\n%q\nwant (tabwriter)\n%q", got.String(), want.String())
	}

	// Widths are the first block's, at least min: a wider cell later
	// shifts what follows it in its row, and the row after is as before;
	// a row shifted by one cell finds its column again after a short one.
	got.Reset()
	tb = newTable(&got, 0, 3)
	for i := range 3 * tableBlock {
		switch i {
		case 2 * tableBlock:
			tb.row("a-much-longer-name\t1\tok\tz")
		case 2*tableBlock + 2:
			tb.row("xyz\t1\tok\tz")
		default:
			tb.row("x\t1\tok\tz")
		}
	}
	tb.flush()
	lines := strings.Split(strings.TrimSuffix(got.String(), "\n"), "\n")
	if len(lines) != 3*tableBlock {
		t.Fatalf("%d lines, want %d", len(lines), 3*tableBlock)
	}
	for i, want := range map[int]string{0: "x  1    ok  z", 2*tableBlock - 1: "x  1    ok  z",
		2 * tableBlock: "a-much-longer-name  1  ok  z", 2*tableBlock + 1: "x  1    ok  z", 2*tableBlock + 2: "xyz  1  ok  z"} {
		if lines[i] != want {
			t.Errorf("line %d: %q, want %q", i, lines[i], want)
		}
	}
}
