package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/control"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// The management subcommands talk to the daemon of a cache directory over
// its control socket (package control). They share two flags: --cache-dir,
// with the same default as mount, and --json.

// manageOpts are the flags every management subcommand takes.
type manageOpts struct {
	cacheDir *string
	json     *bool
}

func manageFlags(fs *pflag.FlagSet) manageOpts {
	return manageOpts{
		cacheDir: cacheDirFlag(fs, "cache `directory` of the mount to manage"),
		json:     fs.Bool("json", false, "print JSON rather than a table"),
	}
}

// dial connects to the daemon; if there is none the error says that the
// cache is not mounted.
func (o manageOpts) dial(ctx context.Context) (*control.Client, error) {
	return control.Dial(ctx, *o.cacheDir)
}

// print writes v as JSON with --json, else calls human.
func (o manageOpts) print(v any, human func(w io.Writer)) error {
	if *o.json {
		return printJSON(os.Stdout, v)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// manageCommand makes a command that takes the shared flags. names, if
// above 0, is how many image names it takes: they are completed from the
// daemon (-1: any number).
func manageCommand(use, short, long string, names int, flags func(*pflag.FlagSet, manageOpts) func([]string) error) *cobra.Command {
	return manageCommandCompleting(use, short, long, func(o manageOpts) cobra.CompletionFunc {
		switch {
		case names == 0:
			return cobra.NoFileCompletions
		case names > 0:
			return completeImages(o, names)
		default:
			return completeImages(o, 0)
		}
	}, flags)
}

// manageCommandCompleting makes a command that takes the shared flags,
// whose arguments complete makes the completion of.
func manageCommandCompleting(use, short, long string, complete func(manageOpts) cobra.CompletionFunc,
	flags func(*pflag.FlagSet, manageOpts) func([]string) error) *cobra.Command {
	var o manageOpts
	c := command(use, short, long, func(fs *pflag.FlagSet) func([]string) error {
		o = manageFlags(fs)
		return flags(fs, o)
	})
	c.MarkFlagDirname("cache-dir")
	c.ValidArgsFunction = complete(o)
	return c
}

// oneName checks that args is exactly one image name.
func oneName(args []string) (string, error) {
	if len(args) != 1 {
		return "", usageErr("want one image NAME, got %d arguments", len(args))
	}
	return imageArg(args[0])
}

// imageArg is an image (or directory) name from the command line as the
// catalog spells it ("/ubuntu//jammy.img/" is "ubuntu/jammy.img"); a name
// no catalog could hold ("../x", a control character) is a usage error
// that quotes it.
func imageArg(arg string) (string, error) {
	name, err := upstream.CleanName(strings.TrimRight(arg, "/"))
	if err != nil {
		return "", usageErr("%v", err)
	}
	return name, nil
}

// shown is a name (or message) as the tables show it: as it is if every
// character is printable, else quoted with Go escapes, so that a name
// that reached the catalog before such names were refused (one in an
// old index) can neither disguise itself ("bidi\u202egpj.exe" shown as
// "bidiexe.jpg") nor break a line.
func shown(s string) string {
	for _, r := range s {
		if !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// noArgs checks that there are no arguments.
func noArgs(args []string) error {
	if len(args) != 0 {
		return usageErr("takes no arguments, got %q", args)
	}
	return nil
}

// humanBytes is a size for people: 0, 512, 1.5K, 20M, 3.2G (binary units).
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprint(n)
	}
	v := float64(n)
	for _, u := range []string{"K", "M", "G", "T", "P"} {
		v /= 1024
		if v < 1024 || u == "P" {
			if v < 10 && v != float64(int64(v)) {
				return fmt.Sprintf("%.1f%s", v, u)
			}
			return fmt.Sprintf("%.0f%s", v, u)
		}
	}
	return fmt.Sprint(n)
}

// percent is part of whole as a whole percentage, 100% only when equal.
func percent(part, whole int64) string {
	switch {
	case whole <= 0 || part >= whole:
		return "100%"
	case part <= 0:
		return "0%"
	}
	return fmt.Sprintf("%d%%", min(99, part*100/whole))
}

func humanTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
