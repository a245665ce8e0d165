package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestValidateContentAndAttrs(t *testing.T) {
	body := []byte(`{"schemaVersion":2}`)
	sum := sha256.Sum256(body)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	good := Entry{Name: "repo/index.json", Size: int64(len(body)), Digest: digest, Content: body,
		Attrs: map[string]string{"media_type": "application/vnd.oci.image.index.v1+json"}}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good entry was refused: %v", err)
	}
	if err := (Entry{Name: "blobs/sha256/x", Size: 1, Digest: digest, ByDigest: true}).Validate(); err != nil {
		t.Fatalf("a blob named by its digest was refused: %v", err)
	}

	bad := map[string]func(e *Entry){
		"by digest without one": func(e *Entry) { e.Content, e.Digest, e.ByDigest = nil, "", true },
		"content longer":        func(e *Entry) { e.Size-- },
		"content of another digest": func(e *Entry) {
			e.Content = append([]byte(nil), body...)
			e.Content[0] = '['
		},
		"attribute key upper":    func(e *Entry) { e.Attrs = map[string]string{"Type": "x"} },
		"attribute key empty":    func(e *Entry) { e.Attrs = map[string]string{"": "x"} },
		"attribute key dotted":   func(e *Entry) { e.Attrs = map[string]string{"a.b": "x"} },
		"attribute value bidi":   func(e *Entry) { e.Attrs = map[string]string{"os": "a\u202eb"} },
		"attribute value line":   func(e *Entry) { e.Attrs = map[string]string{"os": "a\nb"} },
		"attribute value long":   func(e *Entry) { e.Attrs = map[string]string{"os": strings.Repeat("x", MaxAttrLen+1)} },
		"attribute value binary": func(e *Entry) { e.Attrs = map[string]string{"os": "\xff"} },
		"too many attributes": func(e *Entry) {
			e.Attrs = map[string]string{}
			for i := range MaxAttrs + 1 {
				e.Attrs["k"+strings.Repeat("a", i)] = "v"
			}
		},
	}
	for what, spoil := range bad {
		e := good
		spoil(&e)
		if err := e.Validate(); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: Validate = %v, want ErrBadEntry", what, err)
		}
	}
}
