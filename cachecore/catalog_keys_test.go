package cachecore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// TestImageKeysAreStable: an image's ID names its record and data file,
// so it never changes between versions of imgcache: each kind of entry
// hashes exactly the bytes it always did.
func TestImageKeysAreStable(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	mtime := time.Unix(1700000000, 5)
	cases := []struct {
		e    upstream.Entry
		hash string
	}{
		{upstream.Entry{Name: "a/b.img", Size: 3, Digest: digest, ByDigest: true}, "by digest\x00" + digest},
		{upstream.Entry{Name: "a/b.img", Size: 3, Digest: digest, ETag: `"e"`}, "\x00a/b.img\x00" + digest},
		{upstream.Entry{Name: "a/b.img", Size: 3, ETag: `"e"`}, "http://up/\x00a/b.img\x00etag:\"e\"/3"},
		{upstream.Entry{Name: "a/b.img", Size: 3, ModTime: mtime}, "http://up/\x00a/b.img\x00stat:3/1700000000000000005"},
	}
	k := keyer{source: "http://up/"}
	for _, tc := range cases {
		want := sha256.Sum256([]byte(tc.hash))
		key := k.key(&tc.e)
		if got := key.hex(); got != hex.EncodeToString(want[:]) {
			t.Errorf("%+v: ID %s, want %x", tc.e, got, want)
		}
		if h := key.hexBytes(); string(h[:]) != key.hex() {
			t.Errorf("hexBytes %s, hex %s", h, key.hex())
		}
		if v := string(tc.e.AppendVersion(nil)); v != tc.e.Version() {
			t.Errorf("AppendVersion %q, Version %q", v, tc.e.Version())
		}
	}
}

// TestGroupSortedOrNot: a listing sorted by name (a crawl's) is grouped
// without a map of its IDs; it must come out as the same images, each
// with the same names, as the same listing in any other order.
func TestGroupSortedOrNot(t *testing.T) {
	c := openTest(t, t.TempDir(), newFake())
	var entries []upstream.Entry
	for i := range 300 {
		name := fmt.Sprintf("d%d/e%03d.img", i%3, i)
		e := upstream.Entry{Name: name, Size: int64(1 + i%7), ETag: fmt.Sprintf(`"%d"`, i%5)}
		switch i % 4 {
		case 0: // a blob named by digest under several names
			e.ByDigest, e.Digest = true, fmt.Sprintf("sha256:%064x", i%11)
			e.Size = 7
		case 1: // the same name listed twice as one version, and once more as another
			entries = append(entries, e)
			e2 := e
			e2.ETag = `"other"`
			entries = append(entries, e2)
		}
		entries = append(entries, e)
	}
	groups := func(entries []upstream.Entry) map[imageKey][]string {
		out := map[imageKey][]string{}
		for _, g := range c.group(entries) {
			if _, dup := out[g.key]; dup {
				t.Fatalf("two intakes of ID %s", g.key.hex())
			}
			out[g.key] = append([]string{entries[g.first].Name}, g.links()...)
		}
		return out
	}
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b upstream.Entry) int { return strings.Compare(a.Name, b.Name) })
	want := groups(sorted)
	if len(want) == len(sorted) || len(want) < 100 {
		t.Fatalf("%d images of %d entries: the listing does not share IDs", len(want), len(sorted))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		shuffled := slices.Clone(entries)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := groups(shuffled)
		if len(got) != len(want) {
			t.Fatalf("%d images unsorted, %d sorted", len(got), len(want))
		}
		for k, names := range want {
			if !slices.Equal(got[k], names) {
				t.Fatalf("image %s: names %q unsorted, %q sorted", k.hex(), got[k], names)
			}
		}
	}
}
