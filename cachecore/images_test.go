package cachecore

import (
	"errors"
	"slices"
	"testing"
)

func TestImagesStatsAndIndexView(t *testing.T) {
	dir := t.TempDir()
	up := newFake()
	a := randomBytes(200<<10, 1)
	up.Add("a.img", a, true)
	up.Add("sub/b.img", randomBytes(100<<10, 2), false)

	c := openTest(t, dir, up)
	if _, err := c.ImageNamed("nope.img"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ImageNamed of an unknown image: %v", err)
	}
	if _, err := c.ImageNamed("sub"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ImageNamed of a directory: %v", err)
	}
	img, err := c.ImageNamed("a.img")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, c, img) // cold: misses
	readAll(t, c, img) // warm: hits
	waitFor(t, func() bool { return img.Info().State == StateVerified })

	infos := slices.Collect(c.Images(""))
	if len(infos) != 2 || infos[0].Name != "a.img" || infos[1].Name != "sub/b.img" {
		t.Fatalf("Images: %+v", infos)
	}
	if infos[0].CachedBytes != int64(len(a)) || infos[0].Hits != 2 || infos[1].State != StateAbsent {
		t.Fatalf("Images: %+v", infos)
	}
	s := c.Snapshot()
	if s.Opens != 2 || s.Misses == 0 || s.Hits == 0 || s.BytesFetched != uint64(len(a)) ||
		s.BytesServed != 2*uint64(len(a)) || s.Images != 2 || s.Usage.CacheBytes < int64(len(a)) ||
		s.ByState[StateVerified] != 1 || s.ByState[StateAbsent] != 1 || s.FetchesInFlight != 0 || s.Usage.IndexBytes == 0 {
		t.Fatalf("Snapshot: %+v", s)
	}

	// While the cache is open the index is locked: ReadIndex reads a copy.
	v, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Copied || v.Len() != 2 || v.Source == "" {
		t.Fatalf("ReadIndex of an open cache: %+v", v)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	v, err = ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v.Copied || v.Len() != 2 || v.RefreshedAt.IsZero() {
		t.Fatalf("ReadIndex of a closed cache: %+v", v)
	}
	got, _ := v.Image("a.img")
	if b, ok := v.Image("sub/b.img"); !ok || b.State != StateAbsent || b.Size != 100<<10 {
		t.Fatalf("ReadIndex sub/b.img: %+v", b)
	}
	if all := slices.Collect(v.Images("")); len(all) != 2 || all[0].Name != "a.img" || all[1].Name != "sub/b.img" {
		t.Fatalf("ReadIndex images: %+v", all)
	}
	if got.Name != "a.img" || got.State != StateVerified || got.CachedBytes != int64(len(a)) ||
		got.Hits != 2 || got.LastAccess.IsZero() || got.Digest == "" {
		t.Fatalf("ReadIndex a.img: %+v", got)
	}
	if _, err := ReadIndex(t.TempDir()); err == nil {
		t.Fatal("ReadIndex of an empty directory succeeded")
	}
}
