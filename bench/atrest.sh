#!/usr/bin/env bash
# bench/atrest.sh -- what the check at rest costs an image's first open after
# a mount (docs/integrity.md): the time to the first byte of a verified image,
# first open after a remount, in lazy and strict mode, with the image's data
# file in the kernel's page cache and not, beside the same read from a mount
# that has already checked it.
#
# Run as root:   bash bench/atrest.sh
# Knobs (env): SIZE_MB=1024, REPS=3, BASE=/var/tmp/imgcache-atrest (the image
# is kept there and reused). It starts imgcache serve on 127.0.0.1 and mounts
# under $BASE/run; it stops and unmounts only what it started.
set -u -o pipefail
export LC_ALL=C
export PATH=/usr/local/go/bin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SIZE_MB=${SIZE_MB:-1024}
REPS=${REPS:-3}
BASE=${BASE:-/var/tmp/imgcache-atrest}
RUN=$BASE/run
BIN=$RUN/imgcache
PIDS=()
MNTPID=

[ "$(id -u)" = 0 ] || { echo "bench/atrest.sh: run as root" >&2; exit 1; }
for tool in python3 getfattr; do
  command -v $tool >/dev/null || { echo "bench/atrest.sh: $tool is missing" >&2; exit 1; }
done

cleanup() {
  trap - EXIT INT TERM
  [ -n "$MNTPID" ] && kill "$MNTPID" 2>/dev/null && wait "$MNTPID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$BASE/www" "$RUN"
if [ "$(stat -c %s "$BASE/www/a.img" 2>/dev/null)" != $((SIZE_MB << 20)) ]; then
  head -c $((SIZE_MB << 20)) /dev/urandom >"$BASE/www/a.img"
fi
(cd "$REPO" && go build -o "$BIN" ./cmd/imgcache) || exit 1

"$BIN" serve --listen 127.0.0.1:0 "$BASE/www" 2>"$RUN/serve.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "serving" "$RUN/serve.log" && break; sleep 0.1; done
URL=$(grep -o 'http://[^ ]*' "$RUN/serve.log" | head -1)

CACHE=$RUN/cache MNT=$RUN/mnt
rm -rf "$CACHE"
mkdir -p "$MNT"

mount_it() { # mode
  "$BIN" mount --cache-dir "$CACHE" --verify "$1" --scrub-interval 0 "$URL" "$MNT" 2>"$RUN/mount.log" &
  MNTPID=$!
  for _ in $(seq 300); do grep -q "ready" "$RUN/mount.log" && return; sleep 0.05; done
  echo "mount not ready" >&2; cat "$RUN/mount.log" >&2; exit 1
}
unmount_it() { kill "$MNTPID"; wait "$MNTPID"; MNTPID=; }
state() { getfattr --only-values -n user.imgcache.state "$MNT/a.img" 2>/dev/null; }
datafile() { find "$CACHE/data" -type f | head -1; }
# evict the data file's pages from the kernel's cache (that file only)
drop_pages() { python3 -c 'import os,sys; f=os.open(sys.argv[1],os.O_RDONLY); os.fsync(f); os.posix_fadvise(f,0,0,os.POSIX_FADV_DONTNEED)' "$(datafile)"; }
# milliseconds from open to the first byte, in a process of its own
ttfb() { python3 -c '
import os,sys,time
t=time.monotonic(); f=os.open(sys.argv[1],os.O_RDONLY); os.read(f,4096)
print("%.1f" % ((time.monotonic()-t)*1000))' "$MNT/a.img"; }

mount_it lazy
cat "$MNT/a.img" >/dev/null
for _ in $(seq 600); do [ "$(state)" = verified ] && break; sleep 0.1; done
unmount_it

printf '| mode | data file | first open after mount (ms) | next open (ms) |\n|---|---|---|---|\n'
for mode in lazy strict; do
  for pages in cached dropped; do
    firsts= nexts=
    for _ in $(seq "$REPS"); do
      [ $pages = cached ] && cat "$(datafile)" >/dev/null || drop_pages
      mount_it $mode
      firsts+="$(ttfb) "
      sleep 0.2
      nexts+="$(ttfb) "
      unmount_it
    done
    printf '| %s | %s | %s | %s |\n' $mode $pages "$firsts" "$nexts"
  done
done
