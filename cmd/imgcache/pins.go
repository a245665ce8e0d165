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

// pin, unpin and pins manage the pin rules: of a name, a glob or an alias.

func pinCmd() *cobra.Command {
	return manageCommand("pin [--cache-dir DIR] [--json] [--alias | --name] NAME | GLOB | ALIAS", "keep images cached", `
Pins images: they are fetched completely in the background and never
evicted (within --max-size: when pinned images alone fill it, the rest
wait). A pin is a rule, kept across restarts and applied again at every
refresh of the catalog, so it follows new versions:

  imgcache pin NAME
      the image at NAME, whichever version it is now: a new version
      upstream is pinned and fetched as soon as the catalog lists it.
      Same as setfattr -n user.imgcache.pin -v 1 on the file.

  imgcache pin 'GLOB'
      every image whose name, or a directory above it, the glob matches
      (path.Match: * and ? within a name, [a-z], \ before a character
      takes it as it is), and those that match it later. Over a
      simplestreams mirror, only the newest version of each product it
      matches: imgcache pin 'images/debian/bookworm/amd64/default/*'.

  imgcache pin --alias ALIAS
      over a simplestreams mirror, every file of the newest version of
      each product that answers to the alias as LXD resolves one (one of
      its aliases, or one and its architecture: debian/12/amd64).

An argument with *, ? or [ is a glob, unless --name says it is a name.
When a rule selects a newer version, the older one is unpinned (it stays
cached until evicted). imgcache pins lists the rules; imgcache unpin
removes one.`, 1, func(fs *pflag.FlagSet, o manageOpts) func([]string) error { return pinAction(fs, o, true) })
}

func unpinCmd() *cobra.Command {
	return manageCommandCompleting("unpin [--cache-dir DIR] [--json] [--alias | --name] NAME | GLOB | ALIAS", "stop keeping images cached", `
Removes a pin rule, given as imgcache pin took it: what it pinned may be
evicted again when the cache needs room, unless another rule pins it
too. Unpinning an image that a glob or an alias pins fails, naming the
rule to unpin. Same as setfattr -n user.imgcache.pin -v 0 for a name.`, completePins,
		func(fs *pflag.FlagSet, o manageOpts) func([]string) error { return pinAction(fs, o, false) })
}

func pinsCmd() *cobra.Command {
	return manageCommand("pins [--cache-dir DIR] [--json]", "list the pin rules", `
Lists the pin rules (of a name, a glob or an alias) in the order they
were added, each with the images it pins now. With no daemon on the
cache directory it reads the rules from the index; what each pins is
then not known (IMAGES -, "images": null in JSON).`, 0, pinsFlags)
}

// pinArg is the rule an argument of pin or unpin names.
func pinArg(arg string, alias, name bool) (kind, pattern string, err error) {
	switch {
	case alias && name:
		return "", "", usageErr("--alias and --name exclude each other")
	case alias:
		return control.PinAlias, arg, nil
	case !name && strings.ContainsAny(arg, "*?["):
		return control.PinGlob, arg, nil
	}
	n, err := imageArg(arg)
	return control.PinName, n, err
}

func pinAction(fs *pflag.FlagSet, o manageOpts, pin bool) func([]string) error {
	alias := fs.Bool("alias", false, "the argument is an alias of a simplestreams product (debian/12, debian/12/amd64)")
	name := fs.Bool("name", false, "the argument is an image name, even with *, ? or [ in it")
	return func(args []string) error {
		if len(args) != 1 {
			return usageErr("want one NAME, GLOB or --alias ALIAS, got %d arguments", len(args))
		}
		kind, pattern, err := pinArg(args[0], *alias, *name)
		if err != nil {
			return err
		}
		return withClient(o, func(ctx context.Context, c *control.Client) error {
			if kind == control.PinName { // the image's state is what a user wants to see
				return pinName(ctx, c, o, pattern, pin)
			}
			var p control.Pin
			if pin {
				p, err = c.AddPin(ctx, kind, pattern)
			} else {
				p, err = c.RemovePin(ctx, kind, pattern)
			}
			if err != nil {
				return err
			}
			return o.print(p, func(w io.Writer) {
				verb := "pinned"
				if !pin {
					verb = "unpinned"
				}
				fmt.Fprintf(w, "%s %s %s: %d %s\n", verb, kind, shown(pattern), len(p.Images), plural(len(p.Images), "image"))
				listNames(w, "images", p.Images)
			})
		})
	}
}

func pinName(ctx context.Context, c *control.Client, o manageOpts, name string, pin bool) error {
	img, err := c.Pin(ctx, name, pin)
	if err != nil {
		return err
	}
	return o.print(img, func(w io.Writer) {
		switch {
		case pin:
			fmt.Fprintf(w, "pinned %s (%s, %s of %s cached)\n", shown(img.Name), img.State,
				humanBytes(img.CachedBytes), humanBytes(img.Size))
		case img.Pinned:
			fmt.Fprintf(w, "unpinned %s, which another rule pins too (imgcache pins)\n", shown(img.Name))
		default:
			fmt.Fprintf(w, "unpinned %s\n", shown(img.Name))
		}
	})
}

// pinsShown is how many images of a rule the table lists.
const pinsShown = 10

func pinsFlags(fs *pflag.FlagSet, o manageOpts) func([]string) error {
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		pins, err := listPins(o)
		if err != nil {
			return err
		}
		return o.print(pins, func(w io.Writer) { printPins(w, pins) })
	}
}

// printPins writes the rules as a table, then the images of each.
func printPins(w io.Writer, pins []control.Pin) {
	if len(pins) == 0 {
		fmt.Fprintln(w, "no pins")
		return
	}
	fmt.Fprintln(w, "KIND\tPATTERN\tIMAGES\tADDED")
	for _, p := range pins {
		n := "-" // read from the index: the daemon decides
		if p.Images != nil {
			n = fmt.Sprint(len(p.Images))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Kind, shown(p.Pattern), n, humanTime(p.Added))
	}
	for _, p := range pins {
		if len(p.Images) == 0 || p.Kind == control.PinName && len(p.Images) == 1 && p.Images[0] == p.Pattern {
			continue
		}
		fmt.Fprintf(w, "\n%s %s:\n", p.Kind, shown(p.Pattern))
		for i, n := range p.Images {
			if i == pinsShown {
				fmt.Fprintf(w, "  ... and %d more (imgcache pins --json)\n", len(p.Images)-pinsShown)
				break
			}
			fmt.Fprintf(w, "  %s\n", shown(n))
		}
	}
}

// listPins asks the daemon for the pin rules, or with none reads them
// from the index (what each pins is then not known: Images nil).
func listPins(o manageOpts) ([]control.Pin, error) {
	ctx := context.Background()
	c, err := o.dial(ctx)
	if err == nil {
		defer c.Close()
		return c.Pins(ctx)
	}
	v, err := readIndex(o, err)
	if err != nil {
		return nil, err
	}
	pins := []control.Pin{}
	for _, p := range v.Pins {
		pins = append(pins, control.Pin{Kind: string(p.Kind), Pattern: p.Pattern, Added: p.Added})
	}
	return pins, nil
}

// completePins completes the patterns of the pin rules of the daemon of
// o's cache directory: those of aliases after --alias, else the others.
func completePins(o manageOpts) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		alias, _ := cmd.Flags().GetBool("alias")
		ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
		defer cancel()
		c, err := o.dial(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer c.Close()
		pins, err := c.Pins(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, p := range pins {
			if (p.Kind == control.PinAlias) == alias && strings.HasPrefix(p.Pattern, toComplete) {
				out = append(out, p.Pattern)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
