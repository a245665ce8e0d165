package oci

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestWarnings: what a List leaves out is what Warnings says, one line
// each, naming the item and why (a hostile title quoted, cut short if
// long), the same lines at each refresh; a List that fails keeps them, a
// List with nothing refused clears them; a flood of refusals shows
// maxRefusals lines, the last counting the rest exactly.
func TestWarnings(t *testing.T) {
	f := newFakeRegistry()
	good := f.manifest(f.artifact(titled(f.blob([]byte("fine")), "ok.img")))
	notJSON := f.manifest([]byte("not a manifest"))
	long := strings.Repeat("a", 4096)
	hostile := f.manifest(f.artifact(
		titled(f.blob([]byte("1")), "../x"),
		titled(f.blob([]byte("2")), "a\x00b"),
		titled(f.blob([]byte("3")), long),
		titled(f.blob([]byte("4")), "dup.img"),
		titled(f.blob([]byte("5")), "dup.img"),
		titled(f.blob([]byte("6")), "disk.img"),
	))
	f.tag("r", "art", hostile)
	f.tag("r", "moving", good)
	f.tag("r", "-dash", good) // not a tag name
	u, _ := newFakeUpstream(t, f, Options{})
	es := listOK(t, u)
	if !slices.Contains(names(es), "r/art/disk.img") || !slices.Contains(names(es), "r/moving/ok.img") {
		t.Fatalf("the items not refused are not all listed: %q", names(es))
	}
	first := u.Warnings()
	for _, want := range []string{`"../x"`, `"a\x00b"`, `"` + long[:100], `"dup.img"`, `"-dash"`} {
		if !slices.ContainsFunc(first, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("Warnings lack %q:\n%s", want[:min(len(want), 40)], strings.Join(first, "\n"))
		}
	}
	if len(first) != 5 {
		t.Errorf("%d warnings, want 5 (three titles, a shared title, a tag name):\n%s", len(first), strings.Join(first, "\n"))
	}
	for _, l := range first {
		if len(l) > maxRefusalLine+3 || strings.ContainsAny(l, "\n\x00") || !strings.HasPrefix(l, "r") {
			t.Errorf("warning %q: want one line of at most %d bytes naming its repository", l, maxRefusalLine)
		}
	}

	// Tag moving's new manifest is refused: it stays at good, and says
	// so; a new tag with a refused manifest is left out.
	f.tag("r", "moving", notJSON)
	f.tag("r", "bad", notJSON)
	listOK(t, u)
	w := u.Warnings()
	for _, want := range []string{"r:moving kept at its last manifest " + good, "r:bad left out"} {
		if !slices.ContainsFunc(w, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("Warnings lack %q:\n%s", want, strings.Join(w, "\n"))
		}
	}
	if len(w) != 7 {
		t.Errorf("%d warnings, want 7:\n%s", len(w), strings.Join(w, "\n"))
	}
	// The same refusals give the same lines, in the same order.
	listOK(t, u)
	if again := u.Warnings(); !slices.Equal(again, w) {
		t.Errorf("a second List with the same refusals warns\n%s\nthen\n%s", strings.Join(w, "\n"), strings.Join(again, "\n"))
	}

	// A List that fails says nothing new: the warnings stay.
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	if _, err := u.List(context.Background()); err == nil {
		t.Fatal("List of a registry answering 503 succeeded")
	}
	if got := u.Warnings(); !slices.Equal(got, w) {
		t.Errorf("a failed List changed the warnings to\n%s", strings.Join(got, "\n"))
	}
	f.hook = nil

	// Nothing refused: no warnings.
	f.mu.Lock()
	f.tags = map[string]map[string]string{"r": {"moving": good}}
	f.sorted = nil
	f.mu.Unlock()
	listOK(t, u)
	if got := u.Warnings(); len(got) != 0 {
		t.Errorf("warnings with nothing refused:\n%s", strings.Join(got, "\n"))
	}

	// A thousand refusals: maxRefusals lines, the last counting the
	// rest, held in bounded memory.
	for i := range 1000 {
		f.tag("r", fmt.Sprintf("-t%04d", i), good)
	}
	listOK(t, u)
	got := u.Warnings()
	if len(got) != maxRefusals || got[len(got)-1] != fmt.Sprintf("and %d more; the log names each", 1000-(maxRefusals-1)) {
		t.Errorf("1000 refused tags: %d warnings, ending %q", len(got), got[len(got)-1])
	}
}
