package httpdir

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParseJSONListing250k: nginx's JSON listing of a directory of
// 250,000 files (a quarter of bench/run.sh's million-image catalog).
func BenchmarkParseJSONListing250k(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[\n")
	for i := range 250_000 {
		if i > 0 {
			sb.WriteString(",\n")
		}
		fmt.Fprintf(&sb, `{ "name":"e-%07d.img", "type":"file", "mtime":"Wed, 02 Dec 2026 04:30:06 GMT", "size":1048576 }`, i)
	}
	sb.WriteString("\n]\n")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		l, err := parseJSONListing(body, fuzzDir)
		if err != nil || len(l.links) != 250_000 {
			b.Fatal(err, len(l.links))
		}
	}
}

// TestJSONListingRoomIsBounded: the room made for a listing's links
// follows its entries, but a body that repeats "name" (one entry's key,
// a hundred thousand times) does not reserve an entry's room for each.
func TestJSONListingRoomIsBounded(t *testing.T) {
	body := []byte(`[{"type":"file","size":1` + strings.Repeat(`,"name":"a.img"`, 100_000) + `}]`)
	l, err := parseJSONListing(body, fuzzDir)
	if err != nil || len(l.links) != 1 {
		t.Fatalf("%d links, %v", len(l.links), err)
	}
	if c := cap(l.links); c > len(body)/minJSONEntry {
		t.Fatalf("room for %d links in a body of %d bytes", c, len(body))
	}
}
