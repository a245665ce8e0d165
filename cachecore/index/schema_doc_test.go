package index

import (
	"bufio"
	"encoding/json"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

const designDoc = "../../docs/design.md"

// documentedKey is a row of the index schema table of docs/design.md.
type documentedKey struct {
	key    string   // a whole key, or a prefix when perID
	perID  bool     // the key is the prefix followed by an image ID (`img/<id>`)
	json   bool     // the value is a JSON object of the fields listed
	fields []string // the JSON fields, in backquotes in the value column
	value  string   // the value column as written
}

var (
	schemaRow = regexp.MustCompile("^\\| `([a-z]+/(?:<id>|[a-z]+))` \\| (.*) \\|$")
	fieldName = regexp.MustCompile("`([a-z_]+)`")
)

// documentedSchema reads the table of the "Index schema" section of
// docs/design.md.
func documentedSchema(t *testing.T) map[string]documentedKey {
	t.Helper()
	f, err := os.Open(designDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc := map[string]documentedKey{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = strings.HasPrefix(l, "## Index schema")
		}
		m := schemaRow.FindStringSubmatch(l)
		if !in || m == nil {
			continue
		}
		d := documentedKey{key: m[1], value: m[2]}
		d.key, d.perID = strings.CutSuffix(d.key, "<id>")
		if strings.HasPrefix(d.value, "JSON") {
			d.json = true
			for _, f := range fieldName.FindAllStringSubmatch(d.value, -1) {
				d.fields = append(d.fields, f[1])
			}
		}
		doc[d.key] = d
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(doc) < 4 {
		t.Fatalf("%s: %d rows in the index schema table; the table was not found", designDoc, len(doc))
	}
	return doc
}

// filled sets every field of the struct *p to a value that is not
// zero, so that omitempty and omitzero leave none of them out.
func filled[T any](t *testing.T) T {
	t.Helper()
	var x T
	v := reflect.ValueOf(&x).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)))
		case f.Kind() == reflect.String:
			f.SetString("x")
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.CanInt():
			f.SetInt(1)
		case f.CanUint():
			f.SetUint(1)
		case f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct:
			f.Set(reflect.New(f.Type().Elem())) // present; its own fields are not the table's
		default:
			t.Fatalf("%s.%s: cannot fill a %s; teach filled", v.Type(), v.Type().Field(i).Name, f.Type())
		}
	}
	return x
}

// TestSchemaAsDocumented holds the index schema table of docs/design.md
// against what Write puts in badger: every key written is documented,
// every documented key is written, JSON values have exactly the fields
// the table lists, the schema mark is the one documented, and a delete
// takes every key of its image with it.
func TestSchemaAsDocumented(t *testing.T) {
	doc := documentedSchema(t)
	x, err := Open(t.TempDir(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	rec := filled[Record](t)
	rec.ID = "ab12"
	cat := filled[CatalogMeta](t)
	pins := &PinRules{Rules: []PinRule{filled[PinRule](t)}}
	b := &Batch{Records: []Record{rec}, Sums: map[string][]byte{rec.ID: make([]byte, 32)}, Catalog: &cat, Pins: pins}
	b.PutMap(rec.ID, []byte{1, 0, 0, 0})
	if err := x.Write(b); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	for key, value := range allKeys(t, x) {
		d, ok := doc[key]
		if !ok {
			prefix, _, _ := strings.Cut(key, "/")
			d, ok = doc[prefix+"/"]
			ok = ok && d.perID && key == d.key+rec.ID
		}
		if !ok {
			t.Errorf("the index holds %q, which %s does not document", key, designDoc)
			continue
		}
		seen[d.key] = true
		switch {
		case key == schemaKey:
			if !strings.Contains(d.value, `"`+string(value)+`"`) {
				t.Errorf("%s is %q; %s says %s", key, value, designDoc, d.value)
			}
		case d.json:
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(value, &obj); err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			written := slices.Sorted(maps.Keys(obj))
			for _, v := range obj { // the fields of objects in a list (meta/pins: rules)
				var list []map[string]json.RawMessage
				if json.Unmarshal(v, &list) == nil {
					for _, o := range list {
						written = append(written, slices.Collect(maps.Keys(o))...)
					}
				}
			}
			slices.Sort(written)
			written = slices.Compact(written)
			documented := slices.Sorted(slices.Values(d.fields))
			if !slices.Equal(written, documented) {
				t.Errorf("%s: fields written %q; %s lists %q", key, written, designDoc, documented)
			}
		}
	}
	for _, d := range doc {
		if !seen[d.key] {
			t.Errorf("%s documents %s, which the index does not write", designDoc, d.key)
		}
	}

	if err := x.Write(&Batch{Deletes: []string{rec.ID}}); err != nil {
		t.Fatal(err)
	}
	for key := range allKeys(t, x) {
		if strings.Contains(key, rec.ID) {
			t.Errorf("%s outlived the delete of its image", key)
		}
	}
}

// allKeys returns every key in badger with its value.
func allKeys(t *testing.T, x *Index) map[string][]byte {
	t.Helper()
	x.mu.RLock()
	defer x.mu.RUnlock()
	kv := map[string][]byte{}
	err := x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			kv[string(it.Item().Key())] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
