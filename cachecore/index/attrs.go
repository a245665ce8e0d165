package index

import (
	"encoding/json"
	"iter"
	"maps"
	"slices"
	"strings"
)

// Attrs are an image's attributes from the upstream (upstream.Entry.Attrs:
// keys of [a-z0-9_], printable values without NUL), held as one string,
// "key\x00value\x00key\x00value", sorted by key: a million records keep
// one string each rather than a map, and two sets compare with ==. In
// JSON they are an object, as a map would be.
type Attrs string

// AttrsOf encodes m (nil or empty: "").
func AttrsOf(m map[string]string) Attrs {
	if len(m) == 0 {
		return ""
	}
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
	}
	return Attrs(b.String())
}

// All yields the attributes in key order.
func (a Attrs) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		s := string(a)
		for s != "" {
			k, rest, _ := strings.Cut(s, "\x00")
			v, rest, _ := strings.Cut(rest, "\x00")
			if !yield(k, v) {
				return
			}
			s = rest
		}
	}
}

// Get returns the value of key.
func (a Attrs) Get(key string) (string, bool) {
	for k, v := range a.All() {
		if k == key {
			return v, true
		}
	}
	return "", false
}

// Map returns the attributes as a map (nil if there are none).
func (a Attrs) Map() map[string]string {
	if a == "" {
		return nil
	}
	m := map[string]string{}
	maps.Insert(m, a.All())
	return m
}

func (a Attrs) MarshalJSON() ([]byte, error) { return json.Marshal(a.Map()) }

func (a *Attrs) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k, v := range m {
		if k == "" || strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			// Not an upstream's (a damaged record): kept as an empty
			// key, which the record's check refuses.
			*a = "\x00"
			return nil
		}
	}
	*a = AttrsOf(m)
	return nil
}
