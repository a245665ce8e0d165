package oci

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgcache/imgcache/internal/testregistry"
)

// TestRegistryPullThrough: a registry in proxy mode (a pull-through
// cache in front of another registry) gives the right bytes for a cold
// blob, which it answers with the whole blob whatever the Range, and for
// a warm one.
func TestRegistryPullThrough(t *testing.T) {
	origin := testregistry.Start(t, testregistry.Config{})
	f := pushFixture(t, origin)
	proxy := testregistry.Start(t, testregistry.Config{ProxyOf: origin.URL})
	u, logs := newRegistryUpstream(t, proxy, Options{Repos: []string{"vm/disks"}})
	es, err := u.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	disk := entry(t, es, "vm/disks/jammy/disk.qcow2")
	read := func(off, n int64) []byte {
		t.Helper()
		r, err := u.Fetch(context.Background(), disk, off, n)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	statuses := func() map[int]int {
		out := map[int]int{}
		for _, q := range proxy.Requests() {
			if q.Method == "GET" && strings.Contains(q.URI, "/blobs/"+disk.Digest) {
				out[q.Status]++
			}
		}
		return out
	}
	// Cold: the proxy answers with the whole blob (and, the reader
	// gone after its range, does not keep it).
	if got := read(1_000_000, 4096); !bytes.Equal(got, f.disk[1_000_000:1_004_096]) {
		t.Errorf("cold range through the pull-through registry differs from the origin's bytes")
	}
	if !strings.Contains(logs.String(), "whole blob") {
		t.Errorf("a whole-blob answer is not logged")
	}
	// Read whole, the proxy keeps it (at once, or after the cold read if
	// it finished pulling before it saw the reader go): warm ranges are
	// 206.
	if got := read(0, disk.Size); !bytes.Equal(got, f.disk) {
		t.Errorf("the whole blob through the pull-through registry differs")
	}
	stored := filepath.Join(proxy.Dir, "docker/registry/v2/blobs/sha256", disk.Digest[7:9], disk.Digest[7:], "data")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(stored); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the pull-through registry did not keep the blob: %v", err)
		}
	}
	if got := read(2_000_000, 4096); !bytes.Equal(got, f.disk[2_000_000:2_004_096]) {
		t.Errorf("warm range through the pull-through registry differs from the origin's bytes")
	}
	// The registry logs a request once it is over, a little after the
	// reader went: wait for the three, then look at their answers (the
	// cold one is logged 500 when the registry saw the reader go).
	st := statuses()
	for deadline := time.Now().Add(10 * time.Second); st[200]+st[206]+st[500] < 3 && time.Now().Before(deadline); st = statuses() {
		time.Sleep(20 * time.Millisecond)
	}
	if st[206] < 1 || st[200]+st[500] < 1 {
		t.Errorf("the pull-through registry answered %v, want a whole blob (the cold range) and a 206 (the warm range)", st)
	}
	var all []byte
	for _, e := range es {
		if e.Name == "vm/disks/jammy/notes.txt" {
			all = fetchAll(t, u, e)
		}
	}
	if string(all) != string(f.notes) {
		t.Errorf("notes.txt through the pull-through registry = %q", all)
	}
}
