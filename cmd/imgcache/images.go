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
	return manageCommand("ls [--cache-dir DIR] [--json]", "list the images and their cache state", `
Lists every image of the cache's catalog: size, bytes cached, state
(absent, partial, complete, verified, invalid), hits, pinned, last access.
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
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		imgs, err := listImages(o)
		if err != nil {
			return err
		}
		if imgs == nil {
			imgs = []control.Image{}
		}
		return o.print(imgs, func(w io.Writer) {
			fmt.Fprintln(w, "NAME\tSIZE\tCACHED\t\tSTATE\tHITS\tPINNED\tLAST ACCESS")
			for _, i := range imgs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", shown(i.Name), humanBytes(i.Size),
					humanBytes(i.CachedBytes), percent(i.CachedBytes, i.Size), i.State, i.Hits,
					yesNo(i.Pinned), humanTime(i.LastAccess))
			}
		})
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

func listImages(o manageOpts) ([]control.Image, error) {
	ctx := context.Background()
	c, err := o.dial(ctx)
	if err == nil {
		defer c.Close()
		return c.Images(ctx)
	}
	v, err := readIndex(o, err)
	if err != nil {
		return nil, err
	}
	imgs := make([]control.Image, len(v.Images))
	for i, info := range v.Images {
		imgs[i] = mount.ImageOf(info)
	}
	return imgs, nil
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
	for _, info := range v.Images {
		if info.Name == name {
			return mount.ImageOf(info), nil
		}
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
