package cachecore

import (
	"slices"
	"strings"
	"testing"
)

// TestImagesByPrefix holds Images(prefix) to what sorting every name and
// keeping those with the prefix gives, for every prefix of every name:
// the walk of the tree must yield paths in their sort order even where a
// directory's name is a prefix of a sibling's ("a-b.img" before "a/x.img").
func TestImagesByPrefix(t *testing.T) {
	names := []string{"a/x.img", "a/y/z.img", "a-b.img", "a.img", "b.img", "ab/c.img", "a/y-1.img", "a/y0/q.img"}
	up := newFake()
	for i, n := range names {
		up.Add(n, randomBytes(10, uint64(i)), false)
	}
	c := openTest(t, t.TempDir(), up)
	sorted := slices.Sorted(slices.Values(names))
	prefixes := []string{"", "/a", "a//", "nope/", "c", "a/y/z.img/"}
	for _, n := range names {
		for i := range len(n) + 1 {
			prefixes = append(prefixes, n[:i])
		}
	}
	for _, p := range prefixes {
		var want, got []string
		for _, n := range sorted {
			if strings.HasPrefix(n, p) {
				want = append(want, n)
			}
		}
		for info := range c.Images(p) {
			got = append(got, info.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Images(%q): %q, want %q", p, got, want)
		}
	}
	// A consumer that stops early stops the walk.
	n := 0
	for range c.Images("a") {
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Errorf("stopped after %d images", n)
	}
}

// TestImagesOfSeveralNames: an image of several names (ByDigest) is
// listed once, at its first name, as the listing of images was before it
// walked the tree.
func TestImagesOfSeveralNames(t *testing.T) {
	up := newFake()
	blob := randomBytes(10, 7)
	for _, n := range []string{"b/t/disk", "a/blobs/sha256/x"} {
		up.AddEntryData(blobEntry(n, blob, nil), blob)
	}
	up.Add("c.img", randomBytes(10, 8), false)
	c := openTest(t, t.TempDir(), up)
	var got []string
	for info := range c.Images("") {
		got = append(got, info.Name)
	}
	if want := []string{"a/blobs/sha256/x", "c.img"}; !slices.Equal(got, want) {
		t.Fatalf("Images: %q, want %q", got, want)
	}
}
