// Package mount runs one imgcache mount from start to end: it checks the
// mountpoint (cleaning up a mount left by a crashed daemon), opens the
// upstream and the cache, mounts the filesystem, reports when it is ready,
// serves until unmounted or cancelled, then unmounts and closes the cache.
package mount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream/simplestreams"
	"github.com/imgcache/imgcache/control"
	"github.com/imgcache/imgcache/fs"
)

// Options configure a mount.
type Options struct {
	Upstream     string   // URL of the upstream, or several: "URL1,URL2" (failover in order)
	Mirrors      []string // more upstream URLs, tried after those of Upstream
	Repos        []string // the repositories of an oci:// upstream; empty: its _catalog
	Trust        Trust    // timeouts, retries, TLS, credentials (trust.go)
	Mountpoint   string
	Source       string // the mount's source in /proc/mounts (mount -a matches fstab's against it); "": "imgcache"
	CacheDir     string
	ChunkSize    int64         // 0: the cache's default
	CatalogTTL   time.Duration // 0: the cache's default
	AllowOther   bool
	NonEmpty     bool         // mount over a directory that holds files, or over a live imgcache mount
	RebuildIndex bool         // rebuild the index if it is damaged (cachecore.Config.RebuildIndex)
	Integrity    Integrity    // verification and scrub
	Debug        bool         // log FUSE requests too
	Logger       *slog.Logger // nil: discard
	// Ready, if set, is called once the filesystem answers requests.
	Ready func(Info)
	// Reload, if set, asks for a reload (reload.go) at each receive.
	Reload <-chan struct{}

	Lifecycle cachecore.Lifecycle // size limit, pruner, cleaner, prefetcher
}

// Integrity says when bytes are served and how data at rest is checked
// (see cachecore.Config).
type Integrity struct {
	Verify        cachecore.VerifyMode
	ScrubInterval time.Duration // 0: no scrub
	ScrubRate     int64         // bytes a second; 0: cachecore.DefaultScrubRate
}

// Info describes a mount that is ready.
type Info struct {
	Source     string // upstream URL, credentials removed
	Mountpoint string
	CacheDir   string
	Images     int
	ServeMode  fs.ServeMode // how settled images are read: passthrough or page-cache
}

func (i Info) String() string {
	return fmt.Sprintf("imgcache: ready: %s mounted at %s (cache %s, %d images, %s)",
		i.Source, i.Mountpoint, i.CacheDir, i.Images, i.ServeMode)
}

// Run mounts and serves until ctx is cancelled (then it unmounts) or the
// filesystem is unmounted from outside. It returns nil after a clean end.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mnt, cacheDir, err := checkPaths(o.Mountpoint, o.CacheDir, log)
	if err != nil {
		return err
	}
	if err := checkMountpoint(mnt, o.NonEmpty); err != nil { // mountpoint.go
		return err
	}
	if err := checkFuseDevice(); err != nil { // device.go
		return err
	}
	up, ups, err := openUpstreams(splitUpstreams(o.Upstream, o.Mirrors), o.Trust, o.Repos, log)
	if err != nil {
		return err
	}
	notify := new(fs.Notifier) // the cache may call it from Open on; it reaches the kernel once mounted
	cache, err := cachecore.Open(cachecore.Config{
		Dir:        cacheDir,
		Upstream:   up,
		ChunkSize:  o.ChunkSize,
		CatalogTTL: o.CatalogTTL,
		Lifecycle:  o.Lifecycle,
		Logger:     log,
		Notifier:   notify,
		Products:   simplestreams.Products{}, // pins by glob and alias over a mirror's products; others have none

		RebuildIndex: o.RebuildIndex,

		FailureConfig: o.Trust.failureConfig(),
		FlushInterval: o.Trust.FlushInterval,
		Verify:        o.Integrity.Verify,
		ScrubInterval: o.Integrity.ScrubInterval,
		ScrubRate:     o.Integrity.ScrubRate,
	})
	if err != nil {
		return err
	}
	defer closeCache(cache, log)

	root := fs.NewRoot(cache)
	ctl, err := control.Listen(cacheDir, newBackend(cache, root, mnt, cacheDir), log)
	if err != nil {
		return err
	}
	defer ctl.Close() // before the cache closes: deferred calls run last first

	opts := fs.Options() // its MountOptions hold the fs's own choices (plain READDIR)
	mo := &opts.MountOptions
	mo.FsName, mo.Name = cmp.Or(o.Source, "imgcache"), "imgcache"
	mo.AllowOther, mo.Debug = o.AllowOther, o.Debug
	mo.DirectMount = true // as root: mount(2) directly; else fusermount3
	tuneMountOptions(mo)
	if o.AllowOther {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	server, err := fuse.NewServer(gofs.NewNodeFS(root, opts), mnt, &opts.MountOptions)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	notify.Attach(root)
	tuneMount(root, server, mnt, cacheDir, log)
	memCtx, stopMemory := context.WithCancel(ctx)
	defer stopMemory()
	go governMemory(memCtx) // memory.go
	info := func() Info {
		return Info{Source: cache.Source(), Mountpoint: mnt, CacheDir: cacheDir, Images: cache.ImageCount(),
			ServeMode: root.ServeMode()}
	}
	manager := serviceNotifier{log} // notify.go: systemd's Type=notify
	manager.ready(info())
	if o.Ready != nil {
		o.Ready(info())
	}

	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()
	reloads := newReloader(o.Trust, ups, cache, log)
	for {
		select {
		case <-done:
			manager.stopping()
			log.Info("unmounted from outside", "mountpoint", mnt)
			return nil
		case <-ctx.Done():
			manager.stopping()
			unmount(server, mnt, done, log)
			return nil
		case <-o.Reload:
			manager.reload(info, reloads.reload)
		}
	}
}

// unmountPatience is how long files still open may hold up the unmount
// before the mount is detached.
const unmountPatience = 2 * time.Second

// unmount unmounts, waiting a little for files that are still open; if
// they stay open it detaches the mount (it goes once they close) so that
// a signal always ends the daemon soon.
func unmount(server *fuse.Server, mnt string, done <-chan struct{}, log *slog.Logger) {
	deadline := time.Now().Add(unmountPatience)
	for {
		// umount(2) itself when it may (as root): go-fuse's Unmount tries
		// five times with fusermount3 as well, 0.3 s and more a call under
		// load, 5 s before a busy mount was detached.
		err := syscall.Unmount(mnt, 0)
		if errors.Is(err, syscall.EPERM) {
			err = server.Unmount()
		}
		if err == nil {
			break
		}
		log.Debug("unmount", "err", err)
		if time.Now().After(deadline) {
			log.Warn("mount still busy; detaching it", "mountpoint", mnt)
			if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
				exec.Command("fusermount3", "-u", "-z", mnt).Run()
			}
			break
		}
		select {
		case <-done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// closeBound bounds closing the cache after the unmount: a signal always
// ends the daemon, whatever the cache directory has come to.
const closeBound = 15 * time.Second

// closeCache closes the cache, giving up after closeBound (the index is
// then replayed at the next start, as after a crash).
func closeCache(cache *cachecore.Cache, log *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- cache.Close() }()
	select {
	case err := <-done:
		if err != nil {
			log.Error("closing cache", "err", err)
		}
	case <-time.After(closeBound):
		log.Error("the cache did not close within " + closeBound.String() + "; exiting without it (its index is replayed at the next start)")
	}
}

// checkPaths makes both paths absolute, refuses a mountpoint and a cache
// directory inside one another, and cleans up a stale mount.
func checkPaths(mnt, cacheDir string, log *slog.Logger) (string, string, error) {
	var err error
	if mnt, err = filepath.Abs(mnt); err != nil {
		return "", "", err
	}
	if cacheDir, err = filepath.Abs(cacheDir); err != nil {
		return "", "", err
	}
	if nested(mnt, cacheDir) {
		return "", "", fmt.Errorf("mountpoint %s and cache directory %s must not lie inside one another", mnt, cacheDir)
	}
	if err := cleanStale(mnt, log); err != nil {
		return "", "", err
	}
	fi, err := os.Stat(mnt)
	if err != nil {
		return "", "", fmt.Errorf("mountpoint: %w", err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	return mnt, cacheDir, nil
}

func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// cleanStale unmounts a FUSE mount whose daemon died: the kernel answers
// ENOTCONN ("transport endpoint is not connected") for it.

// isStale says whether mnt is a FUSE mount whose daemon is gone. stat
// alone cannot tell: the kernel answers it from cached attributes without
// asking the (dead) daemon; statfs always asks.
func isStale(mnt string) bool {
	var st syscall.Statfs_t
	_, err := os.Stat(mnt)
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(syscall.Statfs(mnt, &st), syscall.ENOTCONN)
}
func cleanStale(mnt string, log *slog.Logger) error {
	if !isStale(mnt) {
		return nil
	}
	log.Warn("cleaning up the stale mount of a daemon that died", "mountpoint", mnt)
	uerr := syscall.Unmount(mnt, syscall.MNT_DETACH)
	if uerr != nil {
		if out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("stale mount at %s (transport endpoint is not connected) could not be unmounted: %v; fusermount3: %s",
				mnt, uerr, strings.TrimSpace(string(out)))
		}
	}
	if _, err := os.Stat(mnt); err != nil {
		return fmt.Errorf("mountpoint %s after cleaning up a stale mount: %w", mnt, err)
	}
	return nil
}
