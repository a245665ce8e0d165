// The module's floor plan: the package table of docs/design.md held
// against the import graph that go list reports.
package imgcache_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/imgcache/imgcache"

// pkg is what go list says of one package of the module.
type pkg struct {
	ImportPath string
	Imports    []string // direct imports of its non-test files
	Deps       []string // everything those import, directly or not
}

// rel is a package path relative to the module ("" for another module's).
func rel(path string) (string, bool) {
	return strings.CutPrefix(path, module+"/")
}

// ours is the packages of this module among paths, relative.
func ours(paths []string) []string {
	var r []string
	for _, p := range paths {
		if q, ok := rel(p); ok {
			r = append(r, q)
		}
	}
	return r
}

func goList(t *testing.T) map[string]pkg {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the packages: %v", err)
	}
	cmd := exec.Command(gobin, "list", "-json=ImportPath,Imports,Deps", "./...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.ImportPath == module {
			continue // this test, with no package of its own
		}
		r, ok := rel(p.ImportPath)
		if !ok {
			t.Fatalf("go list ./... gave %s, outside %s", p.ImportPath, module)
		}
		pkgs[r] = p
	}
	return pkgs
}

// row is a row of the package table of docs/design.md.
type row struct {
	pkg       string
	mayImport []string
}

var (
	packageRow  = regexp.MustCompile("^\\| `([a-z][a-z0-9/]*)` \\| .* \\| (.*) \\|$")
	backquoted  = regexp.MustCompile("`([^`]+)`")
	nothingOurs = "nothing of ours"
)

// documentedPackages reads the table of the "Packages" section of
// docs/design.md, top to bottom.
func documentedPackages(t *testing.T) []row {
	t.Helper()
	f, err := os.Open("docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []row
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Packages"
		}
		m := packageRow.FindStringSubmatch(l)
		if !in || m == nil {
			continue
		}
		r := row{pkg: m[1]}
		for _, b := range backquoted.FindAllStringSubmatch(m[2], -1) {
			r.mayImport = append(r.mayImport, b[1])
		}
		if len(r.mayImport) == 0 && strings.TrimSpace(m[2]) != nothingOurs {
			t.Errorf("docs/design.md: the row of %s says %q; want packages in backquotes or %q", r.pkg, m[2], nothingOurs)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 10 {
		t.Fatalf("docs/design.md: %d rows in the package table; the table was not found", len(rows))
	}
	return rows
}

// TestFloorPlan holds the package table of docs/design.md against the
// import graph: every package has a row and every row a package; a
// package imports only packages that its row allows and that stand below
// it in the table, so arrows only point down.
func TestFloorPlan(t *testing.T) {
	pkgs := goList(t)
	rows := documentedPackages(t)
	place := map[string]int{}
	for i, r := range rows {
		if _, dup := place[r.pkg]; dup {
			t.Errorf("docs/design.md has two rows of %s", r.pkg)
		}
		place[r.pkg] = i
		if _, ok := pkgs[r.pkg]; !ok {
			t.Errorf("docs/design.md has a row of %s, which is not a package of the module", r.pkg)
		}
	}
	for name := range pkgs {
		if _, ok := place[name]; !ok {
			t.Errorf("%s has no row in the package table of docs/design.md", name)
		}
	}
	for _, r := range rows {
		p, ok := pkgs[r.pkg]
		if !ok {
			continue
		}
		for _, imp := range ours(p.Imports) {
			switch j, known := place[imp]; {
			case !slices.Contains(r.mayImport, imp):
				t.Errorf("%s imports %s, which its row in docs/design.md does not allow", r.pkg, imp)
			case known && j <= place[r.pkg]:
				t.Errorf("%s imports %s, which stands above it in docs/design.md: an arrow up", r.pkg, imp)
			}
		}
		for _, may := range r.mayImport {
			if _, ok := place[may]; !ok {
				t.Errorf("docs/design.md: %s may import %s, which has no row", r.pkg, may)
			}
		}
	}
}

// TestLayerRules checks the rules that the table alone could be edited
// to drop: the engine never depends on go-fuse, control is a leaf, and
// the upstreams know nothing of the engine above them.
func TestLayerRules(t *testing.T) {
	pkgs := goList(t)
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	n := 0
	for name, p := range pkgs {
		if under(name, "cachecore") {
			n++
			for _, d := range p.Deps {
				if strings.HasPrefix(d, "github.com/hanwen/go-fuse") {
					t.Errorf("%s depends on %s: the engine must know nothing of FUSE", name, d)
				}
			}
		}
		if name == "control" {
			if o := ours(p.Deps); len(o) > 0 {
				t.Errorf("control depends on %q: it must be a leaf (mount converts between the engine's types and its own)", o)
			}
		}
		if under(name, "cachecore/upstream") {
			for _, d := range ours(p.Deps) {
				if !under(d, "cachecore/upstream") {
					t.Errorf("%s depends on %s: an upstream knows nothing of the engine", name, d)
				}
			}
		}
	}
	if n < 5 || pkgs["control"].ImportPath == "" {
		t.Fatalf("go list found %d packages under cachecore and control as %q: not this module's layout", n, pkgs["control"].ImportPath)
	}
}
