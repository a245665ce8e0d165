package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/imgcache/imgcache/control"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func prefetchCmd() *cobra.Command {
	return manageCommand("prefetch [--cache-dir DIR] [--json] [--wait] NAME...", "fetch images in the background", `
Queues images for prefetch: the daemon fetches them completely in the
background, with bounded parallelism and behind the reads of running
programs. With --wait it waits until every image is cached, showing a
progress bar on a terminal and plain lines otherwise, and exits 1 if one
cannot be fetched. Same as setfattr -n user.imgcache.prefetch -v 1.`, -1, prefetchFlags)
}

// pollInterval is how often prefetch --wait asks how far the images are.
const pollInterval = 200 * time.Millisecond

func prefetchFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	wait := fs.Bool("wait", false, "wait until the images are cached, showing progress")
	return func(args []string) error {
		if len(args) == 0 {
			return usageErr("want at least one image NAME")
		}
		names := make([]string, len(args))
		for i, a := range args {
			var err error
			if names[i], err = imageArg(a); err != nil {
				return err
			}
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			queued := make([]control.Image, 0, len(names))
			for _, name := range names {
				img, err := c.Queue(ctx, name)
				if err != nil {
					return err
				}
				queued = append(queued, img)
				if !*o.json {
					fmt.Printf("queued %s (%s, %s of %s cached)\n", shown(img.Name), img.State,
						humanBytes(img.CachedBytes), humanBytes(img.Size))
				}
			}
			if !*wait {
				if *o.json {
					return printJSON(os.Stdout, queued)
				}
				return nil
			}
			done, err := waitCached(ctx, c, queued, progressFor(*o.json))
			if *o.json {
				if jerr := printJSON(os.Stdout, done); err == nil {
					err = jerr
				}
			}
			return err
		})
	}
}

// progress shows how far one image is; end is true on its last call.
type progress func(img control.Image, end bool)

func progressFor(json bool) progress {
	switch {
	case json:
		return func(control.Image, bool) {}
	case isTerminal(os.Stdout):
		return func(img control.Image, end bool) { drawBar(os.Stdout, img, end) }
	default:
		return plainProgress(os.Stdout)
	}
}

// waitCached waits for each image in turn (the daemon fetches them in
// parallel) until it is cached, or failed: its state says invalid, or a
// fetch of it failed after it was queued (the daemon retries it later in
// the background, but a caller waiting wants to know now).
func waitCached(ctx context.Context, c *control.Client, imgs []control.Image, show progress) ([]control.Image, error) {
	var done []control.Image
	for _, img := range imgs {
		for {
			cur, err := c.Image(ctx, img.Name)
			if err != nil {
				return done, err
			}
			switch {
			case cur.State == "complete" || cur.State == "verified":
				show(cur, true)
				done = append(done, cur)
			case cur.State == "invalid":
				show(cur, true)
				return append(done, cur), fmt.Errorf("%q failed verification: %s", cur.Name, shown(cur.Error))
			case cur.Error != "" && cur.ErrorAt.After(img.ErrorAt):
				show(cur, true)
				return append(done, cur), fmt.Errorf("%q could not be fetched (the daemon will try again later): %s", cur.Name, shown(cur.Error))
			default:
				show(cur, false)
				time.Sleep(pollInterval)
				continue
			}
			break
		}
	}
	return done, nil
}

// drawBar redraws one terminal line: name [#####.....] 45% 450M/1.0G.
func drawBar(w io.Writer, img control.Image, end bool) {
	const width = 30
	filled := width
	if img.Size > 0 {
		filled = int(min(img.CachedBytes, img.Size) * width / img.Size)
	}
	fmt.Fprintf(w, "\r\033[K%s [%s%s] %4s %s/%s", shown(img.Name), strings.Repeat("#", filled),
		strings.Repeat(".", width-filled), percent(img.CachedBytes, img.Size),
		humanBytes(img.CachedBytes), humanBytes(img.Size))
	if end {
		fmt.Fprintf(w, " %s\n", img.State)
	}
}

// plainProgress prints a line when an image has grown by a tenth or more,
// and one when it is done: readable in a log.
func plainProgress(w io.Writer) progress {
	last := map[string]int64{}
	return func(img control.Image, end bool) {
		if end {
			fmt.Fprintf(w, "%s: %s (%s of %s cached)\n", shown(img.Name), img.State,
				humanBytes(img.CachedBytes), humanBytes(img.Size))
			return
		}
		step := max(img.Size/10, 1)
		prev, seen := last[img.Name]
		if seen && img.CachedBytes-prev < step {
			return
		}
		last[img.Name] = img.CachedBytes
		fmt.Fprintf(w, "%s: %s of %s (%s)\n", shown(img.Name), humanBytes(img.CachedBytes),
			humanBytes(img.Size), percent(img.CachedBytes, img.Size))
	}
}
