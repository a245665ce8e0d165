package main

import (
	"context"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/imgcache/imgcache/control"
)

// completionCmd prints a shell's completion script. The scripts call
// the binary back (imgcache __complete ...), which completes commands and
// flags from the command tree and image names from the daemon.
func completionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "print a shell completion script",
		Long: `
Prints the script that completes imgcache's commands, flags and, from the
daemon of the cache directory, image names in the given shell. To install
it for every user or for yourself:

bash (needs the bash-completion package):

    imgcache completion bash > /etc/bash_completion.d/imgcache
    source <(imgcache completion bash)     # for this shell only

zsh:

    imgcache completion zsh > "${fpath[1]}/_imgcache"

fish:

    imgcache completion fish > ~/.config/fish/completions/imgcache.fish`,
		ValidArgs: []cobra.Completion{"bash", "zsh", "fish"},
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErr("want one shell (bash, zsh or fish), got %d arguments", len(args))
			}
			root, w := c.Root(), c.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(w, true)
			case "zsh":
				return root.GenZshCompletion(w)
			case "fish":
				return root.GenFishCompletion(w, true)
			}
			return usageErr("unknown shell %q: want bash, zsh or fish", args[0])
		},
	}
}

// completionTimeout bounds how long a completion waits for the daemon:
// a shell waiting on a tab should not hang.
const completionTimeout = 2 * time.Second

// maxCompletions bounds the image names a completion offers: the daemon
// sends only the first names with the prefix typed, however large the
// catalog.
const maxCompletions = 1000

// completeImages completes the image names of the daemon of o's cache
// directory (nothing if none answers), up to max arguments (0: any
// number).
func completeImages(o manageOpts, max int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if max > 0 && len(args) >= max || cmd.Flags().Changed("all") { // evict --all takes no name
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		c, err := o.dial(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()
		var names []cobra.Completion
		for img, err := range c.List(ctx, control.ListOptions{Prefix: toComplete, Limit: maxCompletions}) {
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			if !slices.Contains(args, img.Name) {
				names = append(names, img.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
