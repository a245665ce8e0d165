package main

import (
	"flag"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/mount"
)

// integrityFlags defines the mount flags of verification and scrubbing;
// the function it returns reads them once the flags are parsed.
func integrityFlags(fs *flag.FlagSet) func() (mount.Integrity, error) {
	verify := fs.String("verify", "lazy", "when bytes of an image with a digest may be read: `lazy` (as they arrive; "+
		"state partial until the whole image is verified) or strict (not before the whole image is fetched and verified)")
	interval := fs.Duration("scrub-interval", 0, "check every cached image against its recorded chunk checksums this often "+
		"(like imgcache verify), dropping damaged chunks; 0: never")
	rate := sizeFlag(fs, "scrub-rate", cachecore.DefaultScrubRate, "most bytes a second the scrub reads (e.g. 16M)")
	return func() (mount.Integrity, error) {
		mode, err := cachecore.ParseVerifyMode(*verify)
		if err != nil {
			return mount.Integrity{}, usageErr("--verify: %v", err)
		}
		if *interval < 0 || (*interval > 0 && *interval < time.Second) {
			return mount.Integrity{}, usageErr("--scrub-interval %v: want 0 (off) or at least 1s", *interval)
		}
		if *rate <= 0 {
			return mount.Integrity{}, usageErr("--scrub-rate must be positive")
		}
		return mount.Integrity{Verify: mode, ScrubInterval: *interval, ScrubRate: int64(*rate)}, nil
	}
}
