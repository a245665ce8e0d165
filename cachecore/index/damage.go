package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// A damaged index (a disk fault, a stray write, a file cut short) must
// stop a start with one line that says what is damaged and what to do,
// never a stack trace: badger answers some damage with an error ("manifest
// has bad magic") and some with a panic, in goroutines of its own where no
// recover reaches (it opens tables in parallel). So before badger opens
// the index every table is opened here, its blocks' checksums verified,
// with panics recovered; badger's own open and the first read of the
// index run with panics recovered too. Anything found is ErrDamaged;
// the mount then says to start with --rebuild-index (cachecore/rebuild.go).

// ErrDamaged: the index cannot be read as it is.
var ErrDamaged = errors.New("cache index is damaged")

// damaged makes the ErrDamaged of the index in dir.
func damaged(dir string, cause any) error {
	return fmt.Errorf("%w: %s: %s", ErrDamaged, dir, oneLine(cause))
}

// oneLine cuts what badger said (an error, a panic) to one line.
func oneLine(cause any) string {
	text := strings.TrimSpace(fmt.Sprint(cause))
	if strings.Contains(text, "Recovering from initIndex crash") { // badger's panic text, over lines
		return "its index block is unreadable"
	}
	first, _, _ := strings.Cut(text, "\n")
	if first = strings.TrimSpace(first); first == "" {
		return "unreadable"
	}
	if len(first) > 300 {
		first = first[:300] + "..."
	}
	return first
}

// checkTables opens and verifies every table of the index in dir.
func checkTables(dir string, opt badger.Options) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, name := range names {
		if err := checkTable(name, opt); err != nil {
			return damaged(dir, filepath.Base(name)+": "+oneLine(err))
		}
	}
	return nil
}

// checkTable opens one table read-only and verifies the checksums of its
// index and blocks; a panic of badger's is an error.
func checkTable(path string, opt badger.Options) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	t, err := openTable(path, opt)
	if err != nil {
		return err
	}
	return t.Close(-1) // the file's mapping; never DecrRef, which deletes the file
}

// openTable opens a table file read-only, verifying its checksums.
func openTable(path string, opt badger.Options) (*table.Table, error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return nil, err
	}
	if len(mf.Data) == 0 {
		mf.Close(-1)
		return nil, errors.New("empty table")
	}
	return table.OpenTable(mf, table.Options{
		ReadOnly:           true,
		ChkMode:            options.OnTableRead,
		BloomFalsePositive: opt.BloomFalsePositive,
		BlockSize:          opt.BlockSize,
		Compression:        opt.Compression,
	})
}

// isDamage says whether badger's refusal to open an index means it is
// damaged, rather than out of reach (permissions, a full or read-only
// filesystem, a disk that fails to read): badger's errors keep only
// their text.
func isDamage(err error) bool {
	msg := err.Error()
	for _, s := range []string{"permission denied", "read-only file system", "no space left",
		"input/output error", "Cannot acquire directory lock", "too many open files", "cannot allocate memory"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}
