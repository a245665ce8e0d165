package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/control"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func statsCmd() *cobra.Command {
	return manageCommand("stats [--cache-dir DIR] [--json]", "counters and state of the daemon", `
Shows the daemon's state and counters: the upstream and mountpoint, how
reads of cached images are served (kernel passthrough or not), images by
state, bytes cached and the size limit, the index's size, the prefetch
queue, and counters since the daemon started (opens, hits, misses, bytes
from the upstream and served, evictions, errors, fetches in flight). The
same figures are at /metrics on the control socket in Prometheus format.`, 0, statsFlags)
}

func statsFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			st, err := c.Stats(ctx)
			if err != nil {
				return err
			}
			return o.print(st, func(w io.Writer) { printStats(w, st) })
		})
	}
}

func printStats(w io.Writer, st control.Stats) {
	row := func(k string, format string, a ...any) {
		fmt.Fprintf(w, "%s:\t"+format+"\n", append([]any{k}, a...)...)
	}
	row("source", "%s", st.Source)
	row("mountpoint", "%s", st.Mountpoint)
	row("cache dir", "%s", st.CacheDir)
	row("pid", "%d (up since %s)", st.PID, humanTime(st.Started))
	if st.ServeMode != "" {
		row("serve mode", "%s", st.ServeMode)
	}
	row("images", "%d%s", st.Images, byState(st.ByState))
	row("pinned", "%d", st.Pinned)
	row("queued", "%d", st.QueueLength)
	if st.MaxBytes > 0 {
		row("cache bytes", "%s of %s (%s)", humanBytes(st.CacheBytes), humanBytes(st.MaxBytes), percent(st.CacheBytes, st.MaxBytes))
	} else {
		row("cache bytes", "%s", humanBytes(st.CacheBytes))
	}
	row("index bytes", "%s", humanBytes(st.IndexBytes))
	row("opens", "%d", st.Opens)
	row("hits", "%d", st.Hits)
	row("misses", "%d", st.Misses)
	row("upstream bytes", "%s", humanBytes(int64(st.UpstreamBytes)))
	row("served bytes", "%s", humanBytes(int64(st.ServedBytes)))
	row("evictions", "%d", st.Evictions)
	row("errors", "%d", st.Errors)
	row("retries", "%d", st.Retries)
	row("fetches in flight", "%d", st.FetchesInFlight)
}

// byState is " (absent 3, partial 1)" in the order of the states' life.
func byState(m map[string]int) string {
	order := []string{"absent", "partial", "complete", "verified", "invalid"}
	for s := range m {
		if !slices.Contains(order, s) {
			order = append(order, s)
		}
	}
	var parts []string
	for _, s := range order {
		if m[s] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, m[s]))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
