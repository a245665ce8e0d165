package simplestreams

import (
	"slices"
	"testing"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

func entry(name, product, version, arch, aliases string) upstream.Entry {
	return upstream.Entry{Name: name, Attrs: map[string]string{"product": product, "version": version, "arch": arch, "aliases": aliases}}
}

func names(entries []upstream.Entry) []string {
	var n []string
	for _, e := range entries {
		n = append(n, e.Name)
	}
	slices.Sort(n)
	return n
}

func TestNewest(t *testing.T) {
	cat := []upstream.Entry{
		{Name: IndexPath, Content: []byte("{}")},
		entry("images/debian/bookworm/amd64/default/20240101_05:24/lxd.tar.xz", "debian:bookworm:amd64:default", "20240101_05:24", "amd64", "debian/12,debian/bookworm"),
		entry("images/debian/bookworm/amd64/default/20240101_05:24/root.squashfs", "debian:bookworm:amd64:default", "20240101_05:24", "amd64", "debian/12,debian/bookworm"),
		entry("images/debian/bookworm/amd64/default/20240102_05:24/lxd.tar.xz", "debian:bookworm:amd64:default", "20240102_05:24", "amd64", "debian/12,debian/bookworm"),
		entry("images/debian/bookworm/amd64/default/20240102_05:24/root.squashfs", "debian:bookworm:amd64:default", "20240102_05:24", "amd64", "debian/12,debian/bookworm"),
		entry("images/debian/bookworm/arm64/default/20240103_05:24/root.squashfs", "debian:bookworm:arm64:default", "20240103_05:24", "arm64", "debian/12,debian/bookworm"),
		entry("images/alpine/3.19/amd64/default/20240102/c.tar.gz", "alpine:3.19:amd64:default", "20240102", "amd64", "alpine/3.19"),
	}
	newestAmd64 := []string{
		"images/debian/bookworm/amd64/default/20240102_05:24/lxd.tar.xz",
		"images/debian/bookworm/amd64/default/20240102_05:24/root.squashfs",
	}
	for _, c := range []struct {
		name string
		pick func(upstream.Entry) bool
		want []string
	}{
		{"glob of a product's directory", func(e upstream.Entry) bool { return MatchGlob("images/debian/bookworm/amd64/default/*", e.Name) }, newestAmd64},
		{"glob of an old version", func(e upstream.Entry) bool { return MatchGlob("images/debian/*/amd64/*/20240101_05:24", e.Name) }, newestAmd64},
		{"alias with arch", func(e upstream.Entry) bool { return HasAlias(e, "debian/12/amd64") }, newestAmd64},
		{"alias without arch: every arch", func(e upstream.Entry) bool { return HasAlias(e, "debian/bookworm") },
			append(slices.Clone(newestAmd64), "images/debian/bookworm/arm64/default/20240103_05:24/root.squashfs")},
		{"no such alias", func(e upstream.Entry) bool { return HasAlias(e, "debian/1") }, nil},
		{"glob of everything", func(e upstream.Entry) bool { return MatchGlob("*", e.Name) },
			append(slices.Clone(newestAmd64), "images/alpine/3.19/amd64/default/20240102/c.tar.gz", "images/debian/bookworm/arm64/default/20240103_05:24/root.squashfs")},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := slices.Clone(c.want)
			slices.Sort(want)
			if got := names(Newest(cat, c.pick)); !slices.Equal(got, want) {
				t.Fatalf("got\n %q\nwant\n %q", got, want)
			}
		})
	}
}

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		glob, name string
		want       bool
	}{
		{"images/debian/*", "images/debian/bookworm/amd64/x", true},
		{"images/debian/bookworm/amd64/default/*", "images/debian/bookworm/amd64/default/v/root.squashfs", true},
		{"images/debian/*", "images/alpine/3.19/x", false},
		{"images/debian", "images/debian/x", true},
		{"images/deb", "images/debian/x", false},
		{"[", "images/x", false},
	} {
		if got := MatchGlob(c.glob, c.name); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v", c.glob, c.name, got)
		}
	}
}
