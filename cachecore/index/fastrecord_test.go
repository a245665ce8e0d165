package index

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// sameAsJSON checks that decodeRecord makes of v what json.Unmarshal
// makes of it, error or record.
func sameAsJSON(t *testing.T, v []byte) {
	t.Helper()
	var want, got Record
	werr := json.Unmarshal(v, &want)
	gerr := decodeRecord(v, &got)
	if (werr == nil) != (gerr == nil) || werr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v, %v\nwant %+v, %v", v, got, gerr, want, werr)
	}
}

func randomRecord(rnd *rand.Rand) Record {
	at := func() time.Time {
		if rnd.IntN(3) == 0 {
			return time.Time{}
		}
		t := time.Unix(rnd.Int64N(4e9), rnd.Int64N(1e9))
		if rnd.IntN(2) == 0 {
			return t.UTC()
		}
		return t.In(time.FixedZone("x", 3600*rnd.IntN(12)))
	}
	str := func() string {
		if rnd.IntN(10) == 0 { // escaped by json.Marshal
			return []string{`"etag-1"`, "a<b>&c", "tab\there", "x\\y"}[rnd.IntN(4)]
		}
		return []string{"", "d1/e-0000001.img", "sha256:ab", "é/ü.img", "W/etag"}[rnd.IntN(5)]
	}
	r := Record{ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Name: str(),
		Size: rnd.Int64N(1 << 40), ModTime: at(), ETag: str(), Digest: str(), ChunkSize: 1 << 20, Listed: rnd.IntN(2) == 0,
		Verdict: []Verdict{Unchecked, Verified, Invalid}[rnd.IntN(3)], Hits: rnd.Uint64(), LastAccess: at(),
		LastError: str(), LastErrorAt: at(), Added: at(), Pinned: rnd.IntN(2) == 0, ByDigest: rnd.IntN(2) == 0,
		Content: rnd.IntN(2) == 0, QueuedAt: at(), LastFetch: at()}
	if rnd.IntN(4) == 0 {
		r.SetExtras(Extra{Links: []string{"b", "c"}, Attrs: AttrsOf(map[string]string{"k": "v"})})
	}
	return r
}

// TestDecodeRecordAsJSON: records as json.Marshal writes them, and those
// bytes changed here and there, decode as json.Unmarshal decodes them.
func TestDecodeRecordAsJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for range 3000 {
		r := randomRecord(rnd)
		v, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		sameAsJSON(t, v)
		var plain Record
		if fastRecord(v, &plain) {
			fast++
		}
		for range 20 { // one byte changed, dropped or doubled
			w := append([]byte(nil), v...)
			i := rnd.IntN(len(w))
			switch rnd.IntN(3) {
			case 0:
				w[i] = `{}[]":,-+.0123456789eEtrufalsn \\u00é`[rnd.IntN(38)]
			case 1:
				w = append(w[:i], w[i+1:]...)
			case 2:
				w = append(w[:i+1], w[i:]...)
			}
			sameAsJSON(t, w)
		}
	}
	if fast < 1000 {
		t.Errorf("only %d of 3000 records took the fast path", fast)
	}
	for _, v := range []string{
		`{}`, `{} `, ` {}`, `{"id":"x"}`, `{"ID":"x"}`, `{"id":null}`, `{"size":-0}`, `{"size":01}`, `{"size":1.0}`,
		`{"size":1e3}`, `{"size":9223372036854775808}`, `{"hits":-1}`, `{"hits":18446744073709551615}`,
		`{"listed":true,"listed":false}`, `{"mtime":"2026-12-02T00:23:15Z"}`, `{"mtime":"2026-12-02 00:23:15Z"}`,
		`{"mtime":""}`, `{"name":"a\u00e9"}`, "{\"name\":\"\xff\"}", `{"name":"a"}x`, `{"name":"a",}`,
		`{"verdict":"verified","pinned":true,"by_digest":false,"content":true}`, `{"extra":{"links":["a"]}}`,
		`{"size":"1"}`, `{"unknown":1}`, `{"id":"a"`, `[]`, `null`, ``,
	} {
		sameAsJSON(t, []byte(v))
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"id":"ab","name":"d/e.img","size":1048576,"mtime":"2026-12-02T00:23:15Z","chunk_size":1048576,"listed":true,"hits":0,"added":"2026-12-02T00:30:50.123456789Z"}`))
	f.Fuzz(func(t *testing.T, v []byte) { sameAsJSON(t, v) })
}

func BenchmarkDecodeRecord(b *testing.B) {
	v := []byte(`{"id":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","name":"d1/e-0000001.img","size":1048576,"mtime":"2026-12-02T00:23:15Z","chunk_size":1048576,"listed":true,"hits":0,"added":"2026-12-02T00:30:50.123456789Z"}`)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var r Record
			if err := decodeRecord(v, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestTableMapping(t *testing.T) {
	for _, c := range []struct {
		line       string
		start, end uintptr
		ok         bool
	}{
		{"7f12a000-7f12b000 r--s 00000000 fd:00 1234 /c/index/000701.sst", 0x7f12a000, 0x7f12b000, true},
		{"7f12a000-7f12b000 rw-s 00000000 fd:00 1234 /c/index/000001.vlog", 0, 0, false},
		{"7f12a000-7f12b000 r--s 00000000 fd:00 1234 /other/000701.sst", 0, 0, false},
		{"7f12a000-7f12b000 r--s 00000000 fd:00 1234 /c/index/000701.sst (deleted)", 0, 0, false},
		{"7f12a000-7f12b000 rw-p 00000000 00:00 0 ", 0, 0, false},
		{"7f12b000-7f12a000 r--s 00000000 fd:00 1234 /c/index/000701.sst", 0, 0, false},
	} {
		s, e, ok := tableMapping(c.line, "/c/index")
		if s != c.start || e != c.end || ok != c.ok {
			t.Errorf("%q: %x-%x %v, want %x-%x %v", c.line, s, e, ok, c.start, c.end, c.ok)
		}
	}
}
