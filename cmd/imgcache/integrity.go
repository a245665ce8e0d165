package main

import (
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/mount"
	"github.com/spf13/pflag"
)

// integrityFlags defines the mount flags of verification and scrubbing;
// the function it returns reads them once the flags are parsed.
func integrityFlags(fs *pflag.FlagSet) func() (mount.Integrity, error) {
	verify := fs.String("verify", "lazy", "when bytes of an image with a digest may be read, `lazy|strict`: lazy as they arrive "+
		"(state partial until the whole image is verified), strict not before the whole image is fetched and verified")
	interval := durationFlag(fs, "scrub-interval", cachecore.DefaultScrubInterval, offOrAtLeast(time.Second), "check every cached image against its recorded chunk checksums this often "+
		"(like imgcache verify, paced by --scrub-rate, the first pass a minute after start), dropping damaged chunks, a `duration` of at least 1s; 0: never")
	rate := sizeFlag(fs, "scrub-rate", cachecore.DefaultScrubRate, positiveSize, "most bytes a second the scrub reads, a `size` above 0 (e.g. 16M)")
	return func() (mount.Integrity, error) {
		mode, err := cachecore.ParseVerifyMode(*verify)
		if err != nil {
			return mount.Integrity{}, usageErr("--verify: %v", err)
		}
		return mount.Integrity{Verify: mode, ScrubInterval: *interval, ScrubRate: *rate}, nil
	}
}
