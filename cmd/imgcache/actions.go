package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/imgcache/imgcache/control"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// evict, pin, unpin, prune, clean and verify ask the daemon to act; with no
// daemon they fail, saying that the cache is not mounted.

func evictCmd() *cobra.Command {
	return manageCommand("evict [--cache-dir DIR] [--json] NAME | --all", "drop cached bytes", `
Drops the cached bytes of image NAME, or with --all of every image that is
neither open nor pinned. The images stay listed (state absent); the next
read fetches them again. An open or pinned image is not evicted.`, 1, evictFlags)
}

func pruneCmd() *cobra.Command {
	return manageCommand("prune [--cache-dir DIR] [--json]", "run the pruner now", `
Evicts least recently used images now, as the background pruner does when
usage passes its high watermark, and prints what it freed.`, 0, pruneFlags)
}

func cleanCmd() *cobra.Command {
	return manageCommand("clean [--cache-dir DIR] [--json]", "run the cleaner now", `
Reaps now, as the background cleaner does, partial images whose fetch
stalled and images whose bytes failed verification, and prints what it
freed.`, 0, cleanFlags)
}

func verifyCmd() *cobra.Command {
	return manageCommand("verify [--cache-dir DIR] [--json] [NAME]", "check cached bytes at rest", `
Checks the cached bytes of image NAME, or of every cached image, against
the checksums recorded when they were verified; chunks that no longer match
are dropped (fetched again on the next read). Exits 1 if any image failed.`, 1, verifyFlags)
}

// withClient runs f with a client of the daemon.
func withClient(o manageOpts, f func(context.Context, *control.Client) error) error {
	ctx := context.Background()
	c, err := o.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(ctx, c)
}

func evictFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	all := fs.Bool("all", false, "evict every image that is neither open nor pinned")
	return func(args []string) error {
		var name string
		if *all {
			if len(args) != 0 {
				return usageErr("--all takes no image NAME")
			}
		} else {
			if len(args) != 1 {
				return usageErr("want one image NAME or --all, got %d arguments", len(args))
			}
			var err error
			if name, err = imageArg(args[0]); err != nil {
				return err
			}
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			var r control.EvictResult
			var err error
			if *all {
				r, err = c.EvictAll(ctx)
			} else {
				r, err = c.Evict(ctx, name)
			}
			if err != nil {
				return err
			}
			return o.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "evicted %d %s, freed %s\n", len(r.Evicted), plural(len(r.Evicted), "image"),
					humanBytes(r.FreedBytes))
				listNames(w, "evicted", r.Evicted)
				listNames(w, "kept (open or pinned)", r.Skipped)
			})
		})
	}
}

func pruneFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			r, err := c.Prune(ctx)
			if err != nil {
				return err
			}
			return o.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "evicted %d %s, freed %s; cache now %s", len(r.Evicted), plural(len(r.Evicted), "image"),
					humanBytes(r.FreedBytes), humanBytes(r.UsageBytes))
				if r.MaxBytes > 0 {
					fmt.Fprintf(w, " of %s (prunes to below %s)", humanBytes(r.MaxBytes), humanBytes(r.LowWaterBytes))
				}
				fmt.Fprintln(w)
				listNames(w, "evicted", r.Evicted)
			})
		})
	}
}

func cleanFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			r, err := c.Clean(ctx)
			if err != nil {
				return err
			}
			return o.print(r, func(w io.Writer) {
				fmt.Fprintf(w, "removed %d stalled or invalid %s, freed %s\n", len(r.Removed), plural(len(r.Removed), "image"),
					humanBytes(r.FreedBytes))
				listNames(w, "removed", r.Removed)
			})
		})
	}
}

func verifyFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if len(args) > 1 {
			return usageErr("want at most one image NAME, got %d arguments", len(args))
		}
		name := "" // every image
		if len(args) == 1 && strings.Trim(args[0], "/") != "" {
			var err error
			if name, err = imageArg(args[0]); err != nil {
				return err
			}
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			r, err := c.Verify(ctx, name)
			if err != nil {
				return err
			}
			failed := 0
			for _, ir := range r.Reports {
				if ir.Failed() {
					failed++
				}
			}
			err = o.print(r, func(w io.Writer) {
				for _, ir := range r.Reports {
					verdict := "ok"
					if ir.Failed() {
						verdict = "FAILED"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", verdict, shown(ir.Name), ir.State, shown(ir.Message))
				}
				fmt.Fprintf(w, "checked %d %s, %d chunks, %s: %d bad %s dropped, %d invalid\n", r.Images,
					plural(r.Images, "image"), r.Chunks, humanBytes(r.Bytes), r.BadChunks, plural(r.BadChunks, "chunk"), r.Invalid)
			})
			if err == nil && failed > 0 {
				err = fmt.Errorf("%d of %d %s failed verification", failed, r.Images, plural(r.Images, "image"))
			}
			return err
		})
	}
}

// listNames prints the names of a result under a heading, a few to a line.
func listNames(w io.Writer, heading string, names []string) {
	if len(names) == 0 {
		return
	}
	fmt.Fprintf(w, "%s:\n", heading)
	for _, n := range names {
		fmt.Fprintf(w, "  %s\n", shown(n))
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
