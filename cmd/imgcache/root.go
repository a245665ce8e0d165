package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// The command line is a tree of cobra commands built afresh for each run
// (so each run has fresh flag values). What cobra does by default and
// imgcache does not: print the usage after an error, print errors itself,
// exit 0 on an unknown help topic. Every misuse is a one-line error and
// exit status 2 (run maps errUsage to it; flag errors become errUsage).

const usage = `imgcache: a read-through FUSE cache for VM, OS and container images.

Usage:
  imgcache mount [flags] UPSTREAM MOUNTPOINT   mount a cache of the images at UPSTREAM
  imgcache serve [flags] DIR                   serve the images in DIR over HTTP (an origin)
  imgcache demo [flags]                        serve sample images, mount them, show them
  imgcache help [COMMAND]                      explain a command
  imgcache version                             print the version, commit and Go version
  imgcache completion bash|zsh|fish            print a shell completion script

Managing a mounted cache (all take --cache-dir DIR and --json):
  imgcache ls                                  list the images and their cache state
  imgcache stat NAME | PATH                    show one image
  imgcache evict NAME | --all                  drop cached bytes
  imgcache pin NAME | GLOB | --alias ALIAS     keep images cached, new versions too
  imgcache unpin NAME | GLOB | --alias ALIAS   stop keeping them cached
  imgcache pins                                list the pin rules
  imgcache prefetch [--wait] NAME...           fetch images in the background
  imgcache prune / clean                       run the pruner or the cleaner now
  imgcache verify [NAME]                       check cached bytes at rest
  imgcache stats                               counters and state of the daemon

Run 'imgcache COMMAND --help' for the flags of a command.
`

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:   "imgcache COMMAND [flags] [ARGS]",
		Short: "a read-through FUSE cache for VM, OS and container images",
		Long: `
imgcache mounts a read-through cache of the images an HTTP server offers:
each image is a read-only file, the parts read are fetched on demand into a
local cache directory and served from local disk afterwards. getfattr -d
shows each image's cache state (user.imgcache.*), du shows the bytes
cached, and the management commands (ls, stat, evict, pin, prefetch, ...)
talk to the daemon of a cache directory. Each command is explained by
imgcache help COMMAND, and in its own page, imgcache-COMMAND(1).`,
		// Not cobra's check ("unknown command" with suggestions on
		// several lines): RunE says it in one. The fstab form that
		// mount.fuse3 runs, imgcache SOURCE MOUNTPOINT -o OPTIONS, is
		// taken before cobra sees it (fstab.go).
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			switch {
			case showVersion && len(args) == 0:
				fmt.Fprint(c.OutOrStdout(), version())
				return nil
			case len(args) == 0:
				return errNoCommand
			}
			return usageErr("unknown command %q", args[0])
		},
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true}, // ours: bash, zsh, fish
	}
	root.AddCommand(mountCmd(), serveCmd(), demoCmd(), versionCmd(), completionCmd(),
		lsCmd(), statCmd(), evictCmd(), pinCmd(), unpinCmd(), pinsCmd(), prefetchCmd(),
		pruneCmd(), cleanCmd(), verifyCmd(), statsCmd(), genManCmd())
	root.SetHelpCommand(helpCmd())
	// Not cobra's --version (Version and its template): executing a
	// text/template keeps every exported method in the binary (+5 MB).
	root.Flags().BoolVarP(&showVersion, "version", "v", false, "print the version, commit and Go version (as imgcache version)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return errUsage{err.Error()} })
	root.SetHelpFunc(func(c *cobra.Command, _ []string) {
		if c == root {
			fmt.Fprint(c.OutOrStdout(), usage)
			return
		}
		printHelp(c)
	})
	walk(root, func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true // each Use spells its flags as the README does
		c.DisableAutoGenTag = true     // no date in the man pages' text
		c.Long = strings.TrimSpace(c.Long)
	})
	return root
}

// command makes a command from its synopsis, a one-line and a long
// description, and flags: a function that defines the flags and returns
// the action, which gets the arguments once they are parsed.
func command(use, short, long string, flags func(*pflag.FlagSet) func([]string) error) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Long: long}
	action := flags(c.Flags())
	c.RunE = func(_ *cobra.Command, args []string) error { return action(args) }
	return c
}

// printHelp prints a command's synopsis, description and flags.
func printHelp(c *cobra.Command) {
	w := c.OutOrStdout()
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", c.UseLine(), c.Long)
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(w, "\nFlags:\n%s", c.LocalFlags().FlagUsagesWrapped(terminalWidth(w)))
	}
}

// terminalWidth is the width of the terminal w is, else 0 (lines are not
// wrapped: a pipe or file gets one line per flag).
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil {
			return width
		}
	}
	return 0
}

// helpCmd is "imgcache help [COMMAND]": cobra's own prints the usage and
// exits 0 for a command it does not know.
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:                   "help [COMMAND]",
		Short:                 "explain a command",
		Long:                  "Explains a command: what it does, its arguments and flags.",
		DisableFlagsInUseLine: true,
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			if len(args) == 0 {
				return root.Help()
			}
			cmd, rest, err := root.Find(args)
			if err != nil || cmd == root || len(rest) > 0 {
				return usageErr("unknown command %q", strings.Join(args, " "))
			}
			return cmd.Help()
		},
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var names []cobra.Completion
			if len(args) == 0 {
				for _, sub := range c.Root().Commands() {
					if sub.IsAvailableCommand() {
						names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
					}
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
	}
}

// goStyleFlags spells a long flag given with one dash (-cache-dir=DIR,
// -debug), which Go's flag package took and imgcache's help once showed,
// with two, for the flags of the command that args run; pflag would read
// it as a row of one-letter flags.
func goStyleFlags(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil {
		return args
	}
	cmd.InitDefaultHelpFlag()
	out := slices.Clone(args)
	for i, a := range out {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && cmd.Flags().Lookup(name) != nil {
			out[i] = "-" + a
		}
	}
	return out
}

// walk calls f on c and every command below it.
func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}
