// Command imgcache is a read-through FUSE cache for VM disk images, OS
// images and container image blobs. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/imgcache/imgcache/control"
)

const usage = `imgcache: a read-through FUSE cache for VM, OS and container images.

Usage:
  imgcache mount [flags] UPSTREAM MOUNTPOINT   mount a cache of the images at UPSTREAM
  imgcache serve [flags] DIR                   serve the images in DIR over HTTP (an origin)
  imgcache demo [flags]                        serve sample images, mount them, show them
  imgcache help [COMMAND]                      explain a command

Managing a mounted cache (all take --cache-dir DIR and --json):
  imgcache ls                                  list the images and their cache state
  imgcache stat NAME                           show one image
  imgcache evict NAME | --all                  drop cached bytes
  imgcache pin NAME / unpin NAME               keep an image cached, or stop
  imgcache prefetch [--wait] NAME...           fetch images in the background
  imgcache prune / clean                       run the pruner or the cleaner now
  imgcache verify [NAME]                       check cached bytes at rest
  imgcache stats                               counters and state of the daemon

Run 'imgcache COMMAND --help' for the flags of a command.
`

// command is one subcommand: its flags, its argument synopsis and what it
// does with them.
type command struct {
	name     string
	synopsis string // after "imgcache NAME "
	summary  string // a paragraph for --help
	flags    func(fs *flag.FlagSet) func(args []string) error
}

var commands []*command

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error in how imgcache was called: exit status 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return errUsage{fmt.Sprintf(format, a...)} }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	case "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		name, args = args[1], []string{args[1], "--help"}
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "imgcache: unknown command %q (run 'imgcache --help')\n", name)
	return 2
}

func (c *command) run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("imgcache "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line below
	action := c.flags(fs)
	positional, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		c.help(fs, stdout)
		return 0
	}
	if err == nil {
		err = action(positional)
	} else {
		err = errUsage{flagDashes(err.Error())} // a bad flag or flag value
	}
	var ue errUsage
	var ae *control.APIError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ae) && ae.Status == http.StatusBadRequest: // the daemon's "not an image name"
		fmt.Fprintf(stderr, "imgcache %s: %s (run 'imgcache %s --help')\n", c.name, oneLine(ae.Message), c.name)
		return 2
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "imgcache %s: %s (run 'imgcache %s --help')\n", c.name, oneLine(ue.msg), c.name)
		return 2
	default:
		fmt.Fprintf(stderr, "imgcache %s: %s\n", c.name, oneLine(err.Error()))
		return 1
	}
}

// oneLine escapes what is not printable in a message (a newline, a bidi
// control), as %q would but leaving the rest alone: an error is one line
// and shows what it holds, whatever a name in it carried.
func oneLine(msg string) string {
	var b strings.Builder
	for _, r := range msg {
		if strconv.IsPrint(r) {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// flagDashes spells the flags in the flag package's messages ("invalid
// value "0" for flag -read-timeout: ...", "flag provided but not
// defined: -x") with two dashes, as the help and the README do.
func flagDashes(msg string) string {
	for _, p := range []string{" for flag -", " for -", "not defined: -", "needs an argument: -"} {
		msg = strings.Replace(msg, p, p+"-", 1)
	}
	return msg
}

// parseInterleaved parses flags wherever they stand among the arguments
// (imgcache mount URL DIR --debug works); "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" { // flag.Parse stops after "--" and leaves the rest
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

func (c *command) help(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: imgcache %s %s\n\n%s\n", c.name, c.synopsis, strings.TrimSpace(c.summary))
	if hasFlags(fs) {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}
