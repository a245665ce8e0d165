package cachecore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestStartReconcilesIndexWithData: at start a chunk map whose data file
// is gone is emptied (the image is fetched again, correctly), and a data
// file no record names is deleted.
func TestStartReconcilesIndexWithData(t *testing.T) {
	up := newFake()
	data := randomBytes(192<<10, 31)
	up.Add("a.img", data, false)
	dir := t.TempDir()
	c := openTest(t, dir, up)
	img := mustLookup(t, c, "a.img")
	readAll(t, c, img)
	id := img.id
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "data", dataName(id))); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(dir, "data", "ab", "ab"+id[2:])
	if err := os.MkdirAll(filepath.Dir(stray), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}

	before := up.Fetched()
	c = openTest(t, dir, up)
	defer c.Close()
	img = mustLookup(t, c, "a.img")
	if st := img.Info().State; st != StateAbsent {
		t.Fatalf("image whose data file vanished: state %s, want absent", st)
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Fatalf("stray data file not removed: %v", err)
	}
	if got := readAll(t, c, img); !bytes.Equal(got, data) {
		t.Fatal("wrong bytes after reconciling")
	}
	if n := up.Fetched() - before; n != int64(len(data)) {
		t.Fatalf("fetched %d bytes again, want %d", n, len(data))
	}
}
