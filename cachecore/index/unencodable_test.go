package index

import (
	"errors"
	"testing"
	"time"
)

// A record JSON cannot hold is left out of its batch, said so, and not
// held back: the rest of the batch and every later write are stored, and
// Close loses nothing (it had reported them lost, and every write after
// one such record waited behind it for ever).
func TestUnencodableRecordIsLeftOut(t *testing.T) {
	dir := t.TempDir()
	x, err := Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	bad := testRecord(1)
	bad.ModTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	err = x.Write(&Batch{Records: []Record{testRecord(0), bad, testRecord(2)}})
	if !errors.Is(err, ErrUnencodable) {
		t.Fatalf("write of a record JSON cannot hold: %v, want ErrUnencodable", err)
	}
	if held, _ := x.HeldErr(); held != nil {
		t.Fatalf("writes held back: %v", held)
	}
	if err := x.Write(&Batch{Records: []Record{testRecord(3)}}); err != nil {
		t.Fatalf("the next write: %v", err)
	}
	if err := x.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	x, err = Open(dir, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	l, err := x.Load()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range l.Records {
		names = append(names, r.Name)
	}
	if len(names) != 3 || names[0] != "img000" || names[1] != "img002" || names[2] != "img003" {
		t.Fatalf("records after a restart: %v, want img000 img002 img003", names)
	}
}
