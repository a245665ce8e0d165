package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// The man pages in docs/man are generated from the command tree (cobra's
// doc package) and checked in; a test fails when they differ from what
// the commands say. A page keeps the date it has until its text changes,
// so that regenerating an unchanged page changes nothing.

// manDefaults are the flag defaults a page shows where the help shows
// what this run would use.
var manDefaults = map[string]string{"cache-dir": rootCacheDir}

func genManCmd() *cobra.Command {
	var check bool
	c := &cobra.Command{
		Use:    "gen-man [--check] DIR",
		Short:  "write the man pages",
		Long:   "Writes the man page of every command into DIR (docs/man), or with --check says which are not current.",
		Hidden: true,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErr("want one DIR, got %d arguments", len(args))
			}
			stale, err := syncManPages(newRoot(), args[0], check, time.Now())
			if err != nil {
				return err
			}
			switch {
			case check && len(stale) > 0:
				return fmt.Errorf("the man pages in %s are not current (%s): run 'go run ./cmd/imgcache gen-man %s'",
					args[0], strings.Join(stale, ", "), args[0])
			case !check && len(stale) > 0:
				fmt.Fprintf(c.OutOrStdout(), "updated %s\n", strings.Join(stale, ", "))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&check, "check", false, "change nothing; fail if a page is not current")
	return c
}

// syncManPages brings the man pages in dir up to date with root's
// commands, or with check only says which pages are not: missing,
// different, or of a command that is gone. Pages that change are dated
// now.
func syncManPages(root *cobra.Command, dir string, check bool, now time.Time) (stale []string, err error) {
	old := map[string][]byte{}
	files, err := filepath.Glob(filepath.Join(dir, "imgcache*.1"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if old[filepath.Base(f)], err = os.ReadFile(f); err != nil {
			return nil, err
		}
	}
	var pages []*cobra.Command
	walk(root, func(c *cobra.Command) {
		if c == root || c.IsAvailableCommand() && !c.IsAdditionalHelpTopicCommand() {
			pages = append(pages, c)
		}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if d, ok := manDefaults[f.Name]; ok {
				f.DefValue = d
			}
		})
	})
	for _, c := range pages {
		name := strings.ReplaceAll(c.CommandPath(), " ", "-") + ".1"
		was, had := old[name]
		delete(old, name)
		date, ok := manDate(was)
		if !ok {
			date = now
		}
		page, err := manPage(c, date)
		if err != nil {
			return nil, err
		}
		if had && bytes.Equal(page, was) {
			continue
		}
		stale = append(stale, name)
		if check {
			continue
		}
		if page, err = manPage(c, now); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), page, 0o644); err != nil {
			return nil, err
		}
	}
	for name := range old { // of a command that is gone
		stale = append(stale, name)
		if !check {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
	}
	return stale, nil
}

func manPage(c *cobra.Command, date time.Time) ([]byte, error) {
	var b bytes.Buffer
	h := &doc.GenManHeader{Section: "1", Date: &date, Source: "imgcache", Manual: "imgcache manual"}
	err := doc.GenMan(c, h, &b)
	return b.Bytes(), err
}

// manDate reads the date of a page's .TH line (.TH "IMGCACHE" "1" "Jan
// 2026" ...).
func manDate(page []byte) (time.Time, bool) {
	for line := range strings.Lines(string(page)) {
		if f := strings.Split(line, `"`); strings.HasPrefix(line, ".TH ") && len(f) > 5 {
			t, err := time.Parse("Jan 2006", f[5])
			return t, err == nil
		}
	}
	return time.Time{}, false
}
