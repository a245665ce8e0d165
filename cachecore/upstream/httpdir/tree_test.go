package httpdir

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The listings under testdata/listings were captured from real servers
// (nginx, Apache, python3 -m http.server) serving this tree; see
// capture_test.go. The fixture tests build it again and serve its files
// (for HEAD and SHA256SUMS) beside the captured listings.

// treeFile is a file of the fixture tree, its content made from its name.
type treeFile struct {
	name string
	size int
}

var longName = "long-name-" + strings.Repeat("0123456789", 8) + ".img"

var treeFiles = []treeFile{
	{"jammy-server-cloudimg-amd64.img", 3000},
	{"with space.img", 10},
	{"100%.img", 11},
	{"hash#tag.img", 12},
	{"ünïcødé.qcow2", 13},
	{"it's.img", 14},
	{"a&b.img", 15},
	{"lt<gt>.img", 16},
	{"colon:name.img", 17},
	{"q?mark.img", 18},
	{longName, 19},
	{"empty.img", 0},
	{".hidden.img", 20},
	{"SHA256SUMS.gpg", 21},
	{"sub/nested.img", 22},
	{"sub/deeper/deep.img", 23},
	{"odd dir & co/x y.img", 24},
}

// treeDirs are the directories whose listings were captured.
var treeDirs = []string{"", "sub", "sub/deeper", "odd dir & co"}

// treeSums are the SHA256SUMS files of the tree: the names each covers,
// relative to its directory. The root one also names a file in a
// subdirectory, and carries a comment and a malformed line.
var treeSums = map[string][]string{
	"":    {"jammy-server-cloudimg-amd64.img", "with space.img", "ünïcødé.qcow2", "sub/nested.img"},
	"sub": {"nested.img", "deeper/deep.img"},
}

func treeContent(f treeFile) []byte {
	b := make([]byte, f.size)
	for i := range b {
		b[i] = byte(i*7 + len(f.name))
	}
	return b
}

func treeDigest(name string) string {
	for _, f := range treeFiles {
		if f.name == name {
			h := sha256.Sum256(treeContent(f))
			return hex.EncodeToString(h[:])
		}
	}
	panic("no tree file " + name)
}

func treeSumsContent(dir string) []byte {
	var b strings.Builder
	b.WriteString("# sha256 of the images\n\nnot a sum line\n")
	for _, rel := range treeSums[dir] {
		full := rel
		if dir != "" {
			full = dir + "/" + rel
		}
		fmt.Fprintf(&b, "%s *%s\n", treeDigest(full), rel)
	}
	return []byte(b.String())
}

// buildTree writes the fixture tree under root.
func buildTree(t testing.TB, root string) {
	t.Helper()
	write := func(name string, data []byte) {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range treeFiles {
		write(f.name, treeContent(f))
	}
	for dir := range treeSums {
		write(strings.TrimPrefix(dir+"/"+SumsFile, "/"), treeSumsContent(dir))
	}
}
