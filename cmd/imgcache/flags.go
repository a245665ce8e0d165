package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
)

// byteSize is a flag value like 512K, 4M, 20G or 1048576 (binary units;
// KiB/MiB/GiB/TiB and KB/MB/... spellings mean the same).
type byteSize int64

func sizeFlag(fs *flag.FlagSet, name string, def int64, usage string) *byteSize {
	v := byteSize(def)
	fs.Var(&v, name, usage)
	return &v
}

func (b *byteSize) String() string { return formatSize(int64(*b)) }

func (b *byteSize) Set(s string) error {
	v, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(v)
	return nil
}

func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size (like 512K, 4M, 20G)", s)
	}
	return int64(v * float64(mult)), nil
}

func formatSize(v int64) string {
	for i, u := range []string{"T", "G", "M", "K"} {
		m := int64(1) << (10 * (4 - i))
		if v >= m && v%m == 0 {
			return strconv.FormatInt(v/m, 10) + u
		}
	}
	return strconv.FormatInt(v, 10)
}
