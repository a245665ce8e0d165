package cachecore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FuzzReconcile: start-up over whatever tree is found in a cache
// directory that held one cached image, with names, depths, file types,
// links, modes and owners from the input. Start-up never panics; it
// either refuses, in one line, naming something that is truly unsafe
// where imgcache opens files, or starts, serves the upstream's bytes and
// leaves every stray it did not make alone. Nothing outside the cache
// directory is ever changed.
func FuzzReconcile(f *testing.F) {
	up := newFake()
	data := randomBytes(160<<10, 11)
	up.Add("a.img", data, true)
	template := filepath.Join(f.TempDir(), "cache")
	c, err := Open(Config{Dir: template, Upstream: up, ChunkSize: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	e, _ := c.Lookup("a.img")
	h, err := c.Open(e.Image)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := h.ReadAt(make([]byte, 64<<10), 0); err != nil { // one chunk of three: partly cached
		f.Fatal(err)
	}
	h.Close()
	id := e.Image.id
	if err := c.Close(); err != nil {
		f.Fatal(err)
	}

	// Four bytes an operation (plantTree): what, where, name, detail.
	for _, seed := range [][]byte{
		{},
		{0, 3, 2, 0},                          // data/<fan>/x, which panicked every start
		{1, 1, 8, 1, 'z', 'z', 0, 4, 2, 0},    // data/zz/x
		{2, 3, 0, 0},                          // the data file: a link to a file outside
		{2, 0, 4, 0},                          // lock: a link to a file outside
		{2, 0, 5, 1},                          // data: a link to a directory outside
		{3, 3, 0, 0, 4, 3, 3, 0},              // the data file a named pipe; an orphan that is a hard link outside
		{5, 3, 0, 0, 6, 1, 1, 0, 7, 3, 0, 0},  // chmod 666 the data file, chown the fan-out, remove the data file
		{1, 3, 1, 0, 1, 4, 1, 0, 0, 5, 0, 0},  // data/<fan>/<fan>/<fan>/<id>
		{2, 2, 12, 7, 3, 2, 2, 0},             // in the index: a link, a named pipe
		{2, 1, 14, 0, 2, 0, 7, 0, 2, 0, 8, 8}, // stray links: "<fan>\n" in data, control.sock, a loop
		{1, 0, 4, 0},                          // lock: a directory
		{0, 0, 5, 0},                          // data: a file
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		dir := filepath.Join(t.TempDir(), "cache")
		if err := copyTree(template, dir); err != nil {
			t.Fatal(err)
		}
		outside := t.TempDir()
		victim := filepath.Join(outside, "victim")
		mustWrite(t, victim, []byte("precious\n"))
		if err := os.Mkdir(filepath.Join(outside, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(outside, "sub", dataName(id)[3:]), []byte("planted"))
		before := snapshot(t, outside)

		planted := plantTree(t, dir, id, outside, ops)
		var strays []string
		touched := false // the index, or our own data file rewritten (items of their own)
		for _, p := range planted {
			fi, err := os.Lstat(p)
			if err != nil {
				continue
			}
			if underStray(dir, p) {
				strays = append(strays, p)
			}
			if used(dir, p) && (strings.HasPrefix(p, filepath.Join(dir, "index")) ||
				p == filepath.Join(dir, "data", dataName(id)) && fi.Mode().IsRegular()) {
				touched = true
			}
		}
		c, err := Open(Config{Dir: dir, Upstream: up, ChunkSize: 64 << 10, Logger: discardLogger()})
		if err == nil {
			e, ok := c.Lookup("a.img")
			if !ok || e.Image == nil {
				c.Close()
				t.Fatal("a.img not in the catalog")
			}
			got := readAll(t, c, e.Image)
			if err := c.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			if !bytes.Equal(got, data) && !touched {
				t.Fatal("served bytes that are not the upstream's")
			}
			for _, p := range strays {
				if _, err := os.Lstat(p); err != nil {
					t.Fatalf("stray %q: %v", p, err)
				}
			}
		} else {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error in more than one line: %q", err)
			}
			var u *UnsafePathError
			if errors.As(err, &u) {
				if !used(dir, u.Path) {
					t.Fatalf("refused %q, which imgcache never opens: %v", u.Path, err)
				}
				if why := unsafeNow(u.Path); why == "" {
					t.Fatalf("refused %q, which looks safe: %v", u.Path, err)
				}
			} else if !touched {
				t.Fatalf("start-up failed: %v", err)
			}
		}
		if after := snapshot(t, outside); after != before {
			t.Fatalf("outside the cache directory changed:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// plantTree interprets ops, four bytes at a time (what, where, name,
// detail), as things made in the cache directory; it returns their paths.
func plantTree(t *testing.T, dir, id, outside string, ops []byte) []string {
	dirs := []string{dir, filepath.Join(dir, "data"), filepath.Join(dir, "index"), filepath.Join(dir, "data", id[:2])}
	var planted []string
	other := "00" + id[2:]
	if id[:2] == "00" {
		other = "01" + id[2:]
	}
	names := []string{id, id[:2], "x", other, "lock", "data", "index", "control.sock", "", strings.ToUpper(id), id + ".tmp", "0f", "MANIFEST",
		strings.Repeat("n", 255), id[:2] + "\n", "-"}
	targets := []string{
		filepath.Join(outside, "victim"), filepath.Join(outside, "sub"), "/", "nowhere", ".", "..", "../lock",
		filepath.Join(dir, "data", dataName(id)), "loop",
	}
	next := func() byte {
		if len(ops) == 0 {
			return 0
		}
		b := ops[0]
		ops = ops[1:]
		return b
	}
	for len(ops) > 0 {
		what, where, sel, detail := next()%8, next(), next(), next()
		parent := dirs[int(where)%len(dirs)]
		name := names[int(sel)%len(names)]
		if name == "" { // a name from the input
			n := int(detail)%16 + 1
			var b []byte
			for range n {
				if c := next(); c != 0 && c != '/' {
					b = append(b, c)
				}
			}
			name = string(b)
			if name == "" || name == "." || name == ".." {
				name = "_"
			}
		}
		p := filepath.Join(parent, name)
		var err error
		switch what {
		case 0:
			os.RemoveAll(p)
			err = os.WriteFile(p, []byte("planted"), 0o600)
		case 1:
			os.RemoveAll(p)
			if err = os.Mkdir(p, 0o700); err == nil && len(dirs) < 32 {
				dirs = append(dirs, p)
			}
		case 2:
			os.RemoveAll(p)
			err = os.Symlink(targets[int(detail)%len(targets)], p)
		case 3:
			os.RemoveAll(p)
			err = syscall.Mkfifo(p, 0o600)
		case 4:
			os.RemoveAll(p)
			err = os.Link(filepath.Join(outside, "victim"), p)
		case 5: // not through a link, soft or hard: the harness must not change what lies outside
			fi, lerr := os.Lstat(p)
			if lerr != nil || fi.Mode()&os.ModeSymlink != 0 {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 { // op 4's hard link of the victim
				continue
			}
			err = os.Chmod(p, []os.FileMode{0o666, 0o777, 0o640, 0o000}[detail%4])
		case 6:
			if os.Geteuid() == 0 {
				err = os.Lchown(p, nobody, nobody)
			}
		case 7:
			err = os.RemoveAll(p)
		}
		if err == nil && what != 7 {
			planted = append(planted, p)
		}
	}
	return planted
}

// used says whether imgcache opens p: lock, data and index in the cache
// directory, everything in the index, the fan-out directories and the
// data files in them.
func used(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return false
	}
	parts := strings.Split(rel, "/")
	switch {
	case len(parts) == 1:
		return parts[0] == "lock" || parts[0] == "data" || parts[0] == "index" || parts[0] == "."
	case parts[0] == "index":
		return true
	case parts[0] != "data":
		return false
	case len(parts) == 2:
		return len(parts[1]) == 2 && isLowerHex(parts[1])
	case len(parts) == 3:
		return len(parts[1]) == 2 && isLowerHex(parts[1]) && validID(parts[2]) && parts[2][:2] == parts[1]
	}
	return false
}

// underStray says whether p lies where imgcache never looks (so it must
// survive start-up), as opposed to a data file without a record (which
// start-up removes) or something inside one of those.
func underStray(dir, p string) bool {
	for q := p; q != dir && q != "/"; q = filepath.Dir(q) {
		if !used(dir, q) {
			return true
		}
	}
	return false
}

// unsafeNow says, from lstat alone, what is wrong with p for imgcache to
// use it ("" if nothing).
func unsafeNow(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		return ""
	}
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return "a link"
	case !fi.Mode().IsDir() && !fi.Mode().IsRegular():
		return "not a file or directory"
	case int(st.Uid) != os.Geteuid():
		return "another user's"
	case fi.Mode().Perm()&0o022 != 0:
		return "writable by others"
	case fi.Mode().IsRegular() && st.Nlink != 1:
		return "a second name"
	case fi.Mode().IsRegular() && (filepath.Base(filepath.Dir(p)) == "data" || filepath.Base(p) == "data" || filepath.Base(p) == "index"):
		return "a file where a directory belongs"
	case fi.Mode().IsDir() && (filepath.Base(p) == "lock" || validID(filepath.Base(p))):
		return "a directory where a file belongs"
	}
	return ""
}

// snapshot describes every entry below dir: name, type, mode, owner, links
// and contents.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v uid=%d", p, fi.Mode(), st.Uid)
		if fi.Mode().IsRegular() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteString("; ")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// copyTree copies a directory of directories and regular files.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o600)
	})
}
