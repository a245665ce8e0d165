package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// packageVersion is set by packaged builds:
//
//	go build -ldflags "-X main.packageVersion=1.2.0" ./cmd/imgcache
//
// Without it the version is the module's as the go command stamped it
// (a tag, a pseudo-version, or "(devel)" for a build in the source tree).
var packageVersion string

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, commit and Go version",
		Long: `
Prints imgcache's version, the commit it was built from (with "modified"
when the tree had changes not committed) and the Go version and platform
it was built with. Same as imgcache --version.`,
		Args: noArgsCheck,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprint(c.OutOrStdout(), version())
			return nil
		},
	}
}

// version is what imgcache version prints:
//
//	imgcache 1.2.0
//	commit 0123abcd... (2026-01-02T03:04:05Z, modified)
//	go1.26.8 linux/amd64
func version() string {
	v, commit := packageVersion, "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		if c := buildCommit(bi.Settings); c != "" {
			commit = c
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return fmt.Sprintf("imgcache %s\ncommit %s\n%s %s/%s\n", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// buildCommit is the revision the go command stamped into the binary
// (-buildvcs), its time and whether the tree was modified, or "".
func buildCommit(settings []debug.BuildSetting) string {
	var rev, at string
	modified := false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	var notes []string
	if at != "" {
		notes = append(notes, at)
	}
	if modified {
		notes = append(notes, "modified")
	}
	if len(notes) > 0 {
		rev += " (" + strings.Join(notes, ", ") + ")"
	}
	return rev
}

// noArgsCheck refuses arguments with a usage error (cobra.NoArgs says
// "unknown command", and is not one).
func noArgsCheck(_ *cobra.Command, args []string) error { return noArgs(args) }
