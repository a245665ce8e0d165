#!/usr/bin/env bash
# Origin egress of a fleet: MOUNTS mounts (each with its own cache
# directory) read one image whole and another 1 MiB at four offsets, with
# no tier, through an nginx proxy_cache + slice tier, and through Squid,
# configured as docs/fleet.md says. Runs integration/fleet_test.go with its
# knobs and prints what the origin's access log shows. As root (FUSE, Squid).
#   MOUNTS="1 3 10" (default)   MB=256: size of the image read whole
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH
MOUNTS=${MOUNTS:-"1 3 10"}
MB=${MB:-256}
for n in $MOUNTS; do
  IMGCACHE_FLEET_MOUNTS=$n IMGCACHE_FLEET_MB=$MB \
    go test -count=1 -timeout 60m -run 'TestFleet(WithoutTier|NginxTier|SquidTier)$' -v ./integration/ |
    grep -E 'origin sent|^--- FAIL|^FAIL' | sed 's/^ *fleet_test.go:[0-9]*: //'
done
