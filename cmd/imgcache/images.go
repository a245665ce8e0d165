package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/control"
	"github.com/imgcache/imgcache/mount"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// ls and stat ask the daemon; with no daemon they read the cache's index
// (as of the daemon's last flush), so they work on an unmounted cache.

func lsCmd() *cobra.Command {
	return manageCommand("ls [--cache-dir DIR] [--json] [--prefix PREFIX] [--limit N]", "list the images and their cache state", `
Lists the images of the cache's catalog in name order: size, bytes cached,
state (absent, partial, complete, verified, invalid), hits, pinned, last
access. --prefix lists only the images whose names start with PREFIX
("ubuntu/" for a directory's), --limit only the first N. Images are
printed as the daemon sends them, so that a catalog of millions lists in
little memory; a column of the table widens when a longer cell comes.
With no daemon on the cache directory it reads the cache's index directly
(read-only) and says so on stderr.`, 0, lsFlags)
}

func statCmd() *cobra.Command {
	c := manageCommand("stat [--cache-dir DIR] [--json] NAME | PATH", "show one image", `
Shows one image: size, bytes cached, state, hits, last access, pinned,
queued, digest, source and the last fetch error. NAME is the image's path
in the mount ("ubuntu/jammy.img"). With no daemon on the cache directory it
reads the cache's index directly (read-only).

An argument that is an existing file on an imgcache mount (type
fuse.imgcache: "/mnt/images/ubuntu/jammy.img", or "jammy.img" in
/mnt/images/ubuntu) is a PATH: its attributes (user.imgcache.*) are read
instead, so that anyone who may read the mount sees the image's state,
with no access to the daemon's socket; --cache-dir is not used then.`, 1, statFlags)
	names := c.ValidArgsFunction
	c.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 && toComplete != "" && strings.ContainsRune("/.~", rune(toComplete[0])) { // no name starts so
			return nil, cobra.ShellCompDirectiveDefault // a path
		}
		return names(c, args, toComplete)
	}
	return c
}

func lsFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	prefix := fs.String("prefix", "", "list only the images whose names start with `prefix`")
	limit := intFlag(fs, "limit", 0, nonNegative, "list at most this `number` of images, the first in name order; 0: all")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		lo := control.ListOptions{Prefix: *prefix, Limit: *limit}
		if *o.json {
			a := newJSONArray(os.Stdout)
			if err := eachImage(o, lo, func(i control.Image) error { return a.add(i) }); err != nil {
				a.close()
				return err
			}
			return a.close()
		}
		// SIZE and CACHED as wide as "1023K", the percentage as "100%",
		// STATE as "verified": what a later row may hold.
		t := newTable(os.Stdout, 0, 5, 0, 4, 8)
		t.row("NAME\tSIZE\tCACHED\t\tSTATE\tHITS\tPINNED\tLAST ACCESS")
		err := eachImage(o, lo, func(i control.Image) error {
			return t.row(fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s", shown(i.Name), humanBytes(i.Size),
				humanBytes(i.CachedBytes), percent(i.CachedBytes, i.Size), i.State, i.Hits,
				yesNo(i.Pinned), humanTime(i.LastAccess)))
		})
		if ferr := t.flush(); err == nil {
			err = ferr
		}
		return err
	}
}

func statFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if len(args) != 1 {
			return usageErr("want one image NAME or PATH, got %d arguments", len(args))
		}
		img, isPath, err := statPath(args[0])
		if !isPath && err == nil {
			var name string
			if name, err = imageArg(args[0]); err == nil {
				img, err = statImage(o, name)
			}
		}
		if err != nil {
			return err
		}
		return o.print(img, func(w io.Writer) {
			fmt.Fprintf(w, "name:\t%s\n", shown(img.Name))
			fmt.Fprintf(w, "size:\t%s (%d bytes)\n", humanBytes(img.Size), img.Size)
			fmt.Fprintf(w, "cached:\t%s (%d bytes, %s)\n", humanBytes(img.CachedBytes), img.CachedBytes,
				percent(img.CachedBytes, img.Size))
			fmt.Fprintf(w, "state:\t%s\n", img.State)
			fmt.Fprintf(w, "hits:\t%d\n", img.Hits)
			fmt.Fprintf(w, "last access:\t%s\n", humanTime(img.LastAccess))
			fmt.Fprintf(w, "pinned:\t%s\n", yesNo(img.Pinned))
			fmt.Fprintf(w, "queued:\t%s\n", yesNo(img.Queued))
			if img.Digest != "" {
				fmt.Fprintf(w, "digest:\t%s\n", img.Digest)
			}
			if img.Source != "" {
				fmt.Fprintf(w, "source:\t%s\n", shown(img.Source))
			}
			if img.Error != "" {
				fmt.Fprintf(w, "error:\t%s (at %s)\n", shown(img.Error), humanTime(img.ErrorAt))
			}
			if !img.Retired.IsZero() {
				fmt.Fprintf(w, "retired:\t%s\n", humanTime(img.Retired))
			}
			for _, k := range slices.Sorted(maps.Keys(img.Attrs)) {
				fmt.Fprintf(w, "%s:\t%s\n", k, shown(img.Attrs[k]))
			}
		})
	}
}

// eachImage calls fn with each image lo selects, in name order, as the
// daemon sends them; with no daemon, from the index.
func eachImage(o manageOpts, lo control.ListOptions, fn func(control.Image) error) error {
	ctx := context.Background()
	c, err := o.dial(ctx)
	if err == nil {
		defer c.Close()
		for img, err := range c.List(ctx, lo) {
			if err != nil {
				return err
			}
			if err := fn(img); err != nil {
				return err
			}
		}
		return nil
	}
	v, err := readIndex(o, err)
	if err != nil {
		return err
	}
	n := 0
	for info := range v.Images(lo.Prefix) {
		if err := fn(mount.ImageOf(info)); err != nil {
			return err
		}
		if n++; n == lo.Limit {
			break
		}
	}
	return nil
}

func statImage(o manageOpts, name string) (control.Image, error) {
	ctx := context.Background()
	c, err := o.dial(ctx)
	if err == nil {
		defer c.Close()
		return c.Image(ctx, name)
	}
	v, err := readIndex(o, err)
	if err != nil {
		return control.Image{}, err
	}
	if info, ok := v.Image(name); ok {
		return mount.ImageOf(info), nil
	}
	return control.Image{}, &cachecore.Error{Op: "find", Name: name, Err: cachecore.ErrNotFound}
}

// readIndex reads the index when dialErr says no daemon runs; any other
// failure to reach the daemon is returned as it is.
func readIndex(o manageOpts, dialErr error) (cachecore.IndexView, error) {
	var nm *control.NotMountedError
	if !errors.As(dialErr, &nm) {
		return cachecore.IndexView{}, dialErr
	}
	v, err := cachecore.ReadIndex(nm.CacheDir)
	if err != nil {
		return v, fmt.Errorf("%v, and its index cannot be read: %w", dialErr, err)
	}
	how, why := "its index", ""
	if v.Copied {
		how, why = "a copy of its index", "; the index was not closed cleanly, or another process holds it"
	}
	fmt.Fprintf(os.Stderr, "imgcache: the cache at %s is not mounted; showing %s as last saved (catalog of %s, refreshed %s%s)\n",
		nm.CacheDir, how, v.Source, humanTime(v.RefreshedAt), why)
	return v, nil
}
