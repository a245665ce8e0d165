package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/mount"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func mountCmd() *cobra.Command {
	c := command("mount [flags] UPSTREAM MOUNTPOINT", "mount a cache of the images at UPSTREAM", `
Mounts a read-only cache of the images at UPSTREAM at MOUNTPOINT: an
http:// or https:// URL of a directory (an imgcache origin, or an nginx,
Apache or other server with directory listings), an OCI registry
(oci://HOST[:PORT], or oci+http:// for plain HTTP; --repo picks its
repositories) or a simplestreams image server (simplestreams+https://URL,
as LXD and Incus use). Several, comma-separated, are mirrors tried in
order. It serves the mount in the foreground
until it is unmounted or gets SIGINT or SIGTERM (then it unmounts and exits
0). It prints one line to stderr when the mount is ready. SIGHUP reloads:
the credentials file is read again and the catalog refreshed now.

Reads fault the parts they need in from UPSTREAM into the cache directory;
later reads are local. getfattr -d shows an image's cache state
(user.imgcache.*), du shows what is cached.

From /etc/fstab or mount -t fuse.imgcache the same mount runs as a
detached daemon, its flags given as -o options: see mount.imgcache(8).`, mountFlags)
	c.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 1 {
			return nil, cobra.ShellCompDirectiveFilterDirs // MOUNTPOINT
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c.MarkFlagDirname("cache-dir")
	c.RegisterFlagCompletionFunc("verify", cobra.FixedCompletions([]cobra.Completion{"lazy", "strict"}, cobra.ShellCompDirectiveNoFileComp))
	return c
}

func mountFlags(fs *pflag.FlagSet) func([]string) error {
	cacheDir := cacheDirFlag(fs, "cache `directory` (index and data)")
	chunk := sizeFlag(fs, "chunk-size", cachecore.DefaultChunkSize, chunkSize,
		"fetch unit for new images, a `size` from 64K to 64M, a multiple of 4K (e.g. 1M, 4M)")
	ttl := durationFlag(fs, "catalog-ttl", cachecore.DefaultCatalogTTL, atLeast(time.Second),
		"how often the list of images is refreshed from the upstream (a `duration` of at least 1s)")
	nonempty := fs.Bool("nonempty", false, "mount over a directory that holds files (hidden until the unmount) or over a live imgcache mount")
	allowOther := fs.Bool("allow-other", false, "let users other than the one mounting read the mount (adds default_permissions)")
	debug := fs.Bool("debug", false, "log debug messages and every FUSE request")
	rebuild := fs.Bool("rebuild-index", false, "if the cache's index is damaged, move it aside (index.damaged-TIME) and rebuild it from the data files and the upstream's catalog, keeping the cached bytes it can vouch for; a sound index is left alone")
	tf := addTrustFlags(fs)
	integrity := integrityFlags(fs)
	lifecycle := lifecycleFlags(fs)
	return func(args []string) error {
		if len(args) != 2 {
			return usageErr("want UPSTREAM and MOUNTPOINT, got %d arguments", len(args))
		}
		integ, err := integrity()
		if err != nil {
			return err
		}
		life, err := lifecycle()
		if err != nil {
			return err
		}
		level := slog.LevelInfo
		if *debug {
			level = slog.LevelDebug
		}
		log := slog.New(logHandler(level)) // daemon.go: stderr, or a helper mount's daemon's log
		trust, err := tf.trust(log)
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		reload := reloadSignals()
		err = mount.Run(ctx, mount.Options{
			Upstream:   args[0],
			Mirrors:    tf.mirrors,
			Repos:      tf.repos.listFlag,
			Trust:      trust,
			Mountpoint: args[1],
			Source:     mountSource(args[0]), // fstab.go
			CacheDir:   *cacheDir,
			ChunkSize:  *chunk,
			CatalogTTL: *ttl,
			AllowOther: *allowOther,
			NonEmpty:   *nonempty,
			Integrity:  integ,
			Lifecycle:  life,
			Debug:      *debug,
			Logger:     log,
			Ready:      announceReady, // daemon.go
			Reload:     reload,

			RebuildIndex: *rebuild,
		})
		if errors.Is(err, cachecore.ErrIndexDamaged) && !*rebuild {
			err = fmt.Errorf("%w; start with --rebuild-index to move it aside and rebuild it from the data files and the upstream's catalog", err)
		}
		return err
	}
}

// chunkSize takes the chunk sizes the cache does.
func chunkSize(n int64) error {
	if n < cachecore.MinChunkSize || n > cachecore.MaxChunkSize || n%4096 != 0 {
		return fmt.Errorf("want %s to %s, a multiple of 4K", formatSize(cachecore.MinChunkSize), formatSize(cachecore.MaxChunkSize))
	}
	return nil
}

// reloadSignals turns SIGHUP into reloads. Left to its default, SIGHUP
// (sent when the terminal of a foreground mount closes) would kill the
// daemon and leave a dead mount behind; so would SIGPIPE at the first log
// line written to a closed pipe, so it is ignored (the write just fails).
func reloadSignals() <-chan struct{} {
	signal.Ignore(syscall.SIGPIPE)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // one is pending already
			}
		}
	}()
	return reload
}

// rootCacheDir is the default cache directory of root.
const rootCacheDir = "/var/cache/imgcache"

// cacheDirFlag defines --cache-dir.
func cacheDirFlag(fs *pflag.FlagSet, usage string) *string {
	return stringFlag(fs, "cache-dir", defaultCacheDir(), nonEmpty, usage+"; "+rootCacheDir+" for root, else $XDG_CACHE_HOME/imgcache")
}

// defaultCacheDir is /var/cache/imgcache for root, else the user's cache
// directory ($XDG_CACHE_HOME or ~/.cache) + /imgcache.
func defaultCacheDir() string {
	if os.Geteuid() == 0 {
		return rootCacheDir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "imgcache")
	}
	return filepath.Join(os.TempDir(), "imgcache-"+fmt.Sprint(os.Geteuid()))
}
