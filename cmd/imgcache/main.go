// Command imgcache is a read-through FUSE cache for VM disk images, OS
// images and container image blobs. See README.md.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/imgcache/imgcache/control"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error in how imgcache was called: exit status 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func usageErr(format string, a ...any) error { return errUsage{fmt.Sprintf(format, a...)} }

// errNoCommand is imgcache run with no command: the usage on stderr,
// exit status 2.
var errNoCommand = errors.New("no command")

// run runs the command line args and returns the exit status: 0, 1 when
// the command failed, 2 when it was called wrongly (a one-line error that
// says where the help is).
func run(args []string, stdout, stderr io.Writer) int {
	if code, handled := runFstabForm(args, stdout, stderr); handled { // fstab.go: mount(8)'s helper form
		return code
	}
	root := newRoot()
	root.SetArgs(goStyleFlags(root, args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if errors.Is(err, errNoCommand) {
		fmt.Fprint(stderr, usage)
		return 2
	}
	prefix := "imgcache"
	if cmd != nil {
		prefix = cmd.CommandPath() // "imgcache mount", "imgcache completion bash"
	}
	var ue errUsage
	if errors.As(err, &ue) || errors.Is(err, control.ErrBadName) { // the daemon's "not an image name"
		fmt.Fprintf(stderr, "%s: %s (run '%s --help')\n", prefix, oneLine(err.Error()), prefix)
		return 2
	}
	fmt.Fprintf(stderr, "%s: %s\n", prefix, oneLine(err.Error()))
	return 1
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
