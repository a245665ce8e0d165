package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Flag values check what they are given when they are parsed: a value the
// program would misread (a negative timeout, a size of "nan", a zero that
// would quietly mean "the default") is refused then, so that the command
// exits 2 with a one-line error naming the flag. Each rule is a plain
// function of the parsed value (positiveDuration, offOrAtLeast, ...),
// independent of the flag package. Set's errors do not repeat the value:
// pflag's message quotes it already. Type names the kind of value in the
// help where the usage has no `word` in backquotes.

// durationValue is a duration flag whose values pass check.
type durationValue struct {
	d     time.Duration
	check func(time.Duration) error
}

func durationFlag(fs *pflag.FlagSet, name string, def time.Duration, check func(time.Duration) error, usage string) *time.Duration {
	v := &durationValue{d: def, check: check}
	fs.Var(v, name, usage)
	return &v.d
}

func (v *durationValue) String() string { return v.d.String() }
func (v *durationValue) Type() string   { return "duration" }

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration like 30s, 5m or 1h30m")
	}
	if err := v.check(d); err != nil {
		return err
	}
	v.d = d
	return nil
}

// positiveDuration refuses zero and negative durations.
func positiveDuration(d time.Duration) error {
	if d <= 0 {
		return errors.New("want a duration above 0, like 30s")
	}
	return nil
}

// atLeast refuses durations below min.
func atLeast(min time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d < min {
			return fmt.Errorf("want at least %v", min)
		}
		return nil
	}
}

// offOrAtLeast takes 0 (off) or a duration of at least min.
func offOrAtLeast(min time.Duration) func(time.Duration) error {
	return func(d time.Duration) error {
		if d != 0 && d < min {
			return fmt.Errorf("want 0 (off) or at least %v", min)
		}
		return nil
	}
}

// intValue is a decimal integer flag whose values pass check (Go's
// flag.Int read "010" as octal 8; pflag's takes "0x10").
type intValue struct {
	n     int
	check func(int) error
}

func intFlag(fs *pflag.FlagSet, name string, def int, check func(int) error, usage string) *int {
	v := &intValue{n: def, check: check}
	fs.Var(v, name, usage)
	return &v.n
}

func (v *intValue) String() string { return strconv.Itoa(v.n) }
func (v *intValue) Type() string   { return "number" }

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a whole number")
	}
	if err := v.check(n); err != nil {
		return err
	}
	v.n = n
	return nil
}

// nonNegative refuses numbers below 0.
func nonNegative(n int) error {
	if n < 0 {
		return errors.New("want 0 or more")
	}
	return nil
}

// percentValue is a percentage flag: above 0, at most 100.
type percentValue float64

func percentFlag(fs *pflag.FlagSet, name string, def float64, usage string) *float64 {
	v := percentValue(def)
	fs.Var(&v, name, usage)
	return (*float64)(&v)
}

func (v *percentValue) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }
func (v *percentValue) Type() string   { return "percent" }

func (v *percentValue) Set(s string) error {
	p, err := parsePercent(s)
	if err != nil {
		return err
	}
	*v = percentValue(p)
	return nil
}

// decimal is what a number in a flag may look like: digits, perhaps a
// fraction. No sign, exponent, hex, "nan" or "inf", which ParseFloat
// would take.
var decimal = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// parsePercent reads a percentage above 0 and at most 100 ("90", "87.5";
// a trailing % is allowed).
func parsePercent(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "%")
	if !decimal.MatchString(t) {
		return 0, errors.New("want a percentage like 90")
	}
	p, err := strconv.ParseFloat(t, 64)
	if err != nil || p <= 0 || p > 100 {
		return 0, errors.New("want a percentage above 0 and at most 100")
	}
	return p, nil
}

// stringValue is a string flag whose values pass check.
type stringValue struct {
	s     string
	check func(string) error
}

func stringFlag(fs *pflag.FlagSet, name, def string, check func(string) error, usage string) *string {
	v := &stringValue{s: def, check: check}
	fs.Var(v, name, usage)
	return &v.s
}

func (v *stringValue) String() string { return v.s }
func (v *stringValue) Type() string   { return "string" }

func (v *stringValue) Set(s string) error {
	if err := v.check(s); err != nil {
		return err
	}
	v.s = s
	return nil
}

// nonEmpty refuses "" (an empty --cache-dir would quietly mean the
// current directory).
func nonEmpty(s string) error {
	if s == "" {
		return errors.New("want a value, not an empty string")
	}
	return nil
}

// hostPort takes a TCP address host:port (host may be empty: every
// interface); "" or a bare port would quietly mean something else.
func hostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port, like 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("want a port number from 0 to 65535")
	}
	return nil
}

// byteSize is a flag value like 512K, 4M, 1.5G or 1048576 (binary units;
// KiB/MiB/GiB/TiB and KB/MB/... spellings mean the same) whose values
// pass check.
type byteSize struct {
	n     int64
	check func(int64) error
}

func sizeFlag(fs *pflag.FlagSet, name string, def int64, check func(int64) error, usage string) *int64 {
	v := &byteSize{n: def, check: check}
	fs.Var(v, name, usage)
	return &v.n
}

func (b *byteSize) String() string { return formatSize(b.n) }
func (b *byteSize) Type() string   { return "size" }

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if err := b.check(n); err != nil {
		return err
	}
	b.n = n
	return nil
}

// maxSize is the largest size a flag takes: far beyond any disk, far
// from overflowing the arithmetic done on it.
const maxSize = 1 << 60

// parseSize reads a size: a decimal number (no sign, exponent, "nan" or
// "inf") and an optional binary unit, making a whole number of bytes
// ("0.5" and "0.1K" are not).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		if i := strings.IndexByte("KMGT", t[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			t = strings.TrimSpace(t[:n-1]) // "20 G"
		}
	}
	if !decimal.MatchString(t) {
		return 0, errors.New("want a size like 512K, 4M, 1.5G or 20G")
	}
	v, err := strconv.ParseFloat(t, 64)
	n := v * float64(mult)
	switch {
	case err != nil || n > maxSize:
		return 0, fmt.Errorf("want a size of at most %s", formatSize(maxSize))
	case n != math.Trunc(n):
		return 0, errors.New("not a whole number of bytes")
	}
	return int64(n), nil
}

// positiveSize refuses a size of 0.
func positiveSize(n int64) error {
	if n <= 0 {
		return errors.New("want a size above 0, like 16M")
	}
	return nil
}

// anySize takes every size, 0 included (where 0 means "no limit").
func anySize(int64) error { return nil }

// offOrSizeAtLeast takes 0 (whose meaning the flag's help gives) or a
// size of at least min.
func offOrSizeAtLeast(min int64) func(int64) error {
	return func(n int64) error {
		if n != 0 && n < min {
			return fmt.Errorf("want 0 or at least %s", formatSize(min))
		}
		return nil
	}
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
