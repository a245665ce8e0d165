#!/usr/bin/env bash
# bench/run.sh -- measures imgcache against its physical limits, every case
# beside its baseline in the same run, and writes bench/results.md.
#
# Run as root from anywhere:   bash bench/run.sh
# Knobs (env): SIZE_MB=1024 (the image), BIG_MB=4096 (memory case), REPS=3,
#   FIO_RUNTIME=8, NFILES=10000 (ls -l case), NINDEX=100000 (catalog case:
#   NINDEX images in four directories; the issue's scale is NINDEX=1000000),
#   CASES="seq random partial conc mem meta index norange short registry" (the cases to run;
#   registry runs bench/registry.sh: a 1 GiB artifact on a local docker-registry),
#   NR_MB=256 (the image python3 -m http.server serves in the norange case),
#   BASE=/var/tmp/imgcache-bench (generated images are kept there and reused),
#   REPO=the checkout to build (default: this one; to measure another commit
#   with this script), OUT=bench/results.md, PEERS=1 also runs
#   ../shared/bench/peers.sh with our mount as OURS_CMD (its report goes to
#   $BASE/peers-results.md).
#   e.g. CASES=index NINDEX=1000000 bash bench/run.sh
# It starts nginx on 127.0.0.1, mounts imgcache under $BASE/run, and stops
# and unmounts only what it started (by PID) when it ends.
set -u -o pipefail
export LC_ALL=C
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=${REPO:-$(cd "$HERE/.." && pwd)}
SIZE_MB=${SIZE_MB:-1024}
BIG_MB=${BIG_MB:-4096}
REPS=${REPS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-8}
NFILES=${NFILES:-10000}
NINDEX=${NINDEX:-100000}
BASE=${BASE:-/var/tmp/imgcache-bench}
OUT=${OUT:-$HERE/results.md}
PEERS=${PEERS:-0}
CASES=${CASES:-seq random partial conc mem meta index norange short registry}
NR_MB=${NR_MB:-256}
want() { [[ " $CASES " == *" $1 "* ]]; }
SIZE=$((SIZE_MB << 20))

[ "$(id -u)" = 0 ] || { echo "bench/run.sh: run as root (mount(2), bdi read-ahead, passthrough)" >&2; exit 1; }
for tool in nginx curl dd getfattr fusermount3 go /usr/bin/time; do
  command -v $tool >/dev/null || { echo "bench/run.sh: $tool is missing (apt-get install nginx-light curl attr fuse3 time)" >&2; exit 1; }
done
want random && { command -v fio >/dev/null || { echo "bench/run.sh: fio is missing (the random case: apt-get install fio)" >&2; exit 1; }; }
want norange && { command -v python3 >/dev/null || { echo "bench/run.sh: python3 is missing (the norange case)" >&2; exit 1; }; }
if want short; then
  for tool in file strace mkfs.ext4 losetup; do
    command -v $tool >/dev/null || { echo "bench/run.sh: $tool is missing (the short case: apt-get install file strace e2fsprogs mount)" >&2; exit 1; }
  done
fi

WWW=$BASE/www
RUN=$BASE/run
BIN=$RUN/imgcache
LOGS=$RUN/logs
PIDS=()        # processes this script started
log() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }

cleanup() {
  trap - EXIT INT TERM
  local m p
  for m in $(awk -v b="$RUN/" 'index($2, b) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- data
gen_data() {
  mkdir -p "$WWW/big" "$WWW/huge" "$WWW/many" "$WWW/index"
  if want seq || want random || want partial || want conc || want mem || want short; then
      if [ "$(stat -c %s "$WWW/big/big.img" 2>/dev/null)" != "$SIZE" ]; then
        log "generating $SIZE_MB MiB image"
        head -c "$SIZE" /dev/urandom >"$WWW/big/big.img"
        rm -f "$WWW/big/SHA256SUMS"
      fi
      # Its digest, published as mirrors do: the mount verifies the image
      # against it, and opens it settled (passthrough) only once verified.
      [ -s "$WWW/big/SHA256SUMS" ] || (cd "$WWW/big" && sha256sum --binary big.img >SHA256SUMS)
  fi
  if want mem && [ "$(stat -c %s "$WWW/huge/huge.img" 2>/dev/null)" != $((BIG_MB << 20)) ]; then
    log "generating $BIG_MB MiB image"
    head -c $((BIG_MB << 20)) /dev/urandom >"$WWW/huge/huge.img"
  fi
  if want meta && [ "$(find "$WWW/many" -type f | wc -l)" != "$NFILES" ]; then
    log "generating $NFILES small images"
    rm -rf "$WWW/many" && mkdir -p "$WWW/many"
    (cd "$WWW/many" && seq -f 'img-%06g.img' 1 "$NFILES" | xargs truncate -s 4096)
  fi
  # The short case: an ext4 image of 256 MiB holding 8 files of 4 MiB and
  # 64 of 64 KiB, made without mounting anything (mkfs.ext4 -d).
  if want short && [ ! -s "$WWW/ext4/ext4.img" ]; then
    log "generating an ext4 image"
    local src=$BASE/ext4src i
    rm -rf "$src" && mkdir -p "$src/small" "$WWW/ext4"
    for i in $(seq 1 8); do head -c $((4 << 20)) /dev/urandom >"$src/big$i.bin"; done
    for i in $(seq 1 64); do head -c $((64 << 10)) /dev/urandom >"$src/small/s$i.bin"; done
    truncate -s 256M "$WWW/ext4/ext4.img.tmp" && mkfs.ext4 -q -F -d "$src" "$WWW/ext4/ext4.img.tmp" &&
      mv "$WWW/ext4/ext4.img.tmp" "$WWW/ext4/ext4.img"
    rm -rf "$src"
  fi
  if want norange && [ "$(stat -c %s "$WWW/norange/norange.img" 2>/dev/null)" != $((NR_MB << 20)) ]; then
    log "generating $NR_MB MiB image for python3 -m http.server"
    mkdir -p "$WWW/norange" && head -c $((NR_MB << 20)) /dev/urandom >"$WWW/norange/norange.img"
  fi
  # The catalog case: NINDEX sparse 1 MiB files in four directories
  # d1..d4 (a quarter each), listed by nginx's JSON autoindex.
  if want index && [ "$(find "$WWW/index" -mindepth 2 -type f | wc -l)" != "$NINDEX" ]; then
    log "generating $NINDEX catalog entries"
    rm -rf "$WWW/index" && mkdir -p "$WWW/index"
    local d
    for d in 1 2 3 4; do
      mkdir "$WWW/index/d$d"
      (cd "$WWW/index/d$d" && seq -f 'e-%07g.img' 1 $((NINDEX / 4)) | xargs truncate -s 1048576)
    done
  fi
}

start_nginx() {
  local p
  for p in $(seq 18400 18499); do
    (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { PORT=$p; break; }
  done
  URL=http://127.0.0.1:$PORT
  mkdir -p "$RUN/nginx"
  cat >"$RUN/nginx/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 2;
user root;
pid $RUN/nginx/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  log_format bench '\$uri \$status \$body_bytes_sent';
  access_log $LOGS/access.log bench;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $RUN/nginx/body;
  proxy_temp_path $RUN/nginx/proxy;
  fastcgi_temp_path $RUN/nginx/fastcgi;
  uwsgi_temp_path $RUN/nginx/uwsgi;
  scgi_temp_path $RUN/nginx/scgi;
  server {
    listen 127.0.0.1:$PORT;
    root $WWW;
    autoindex on;
    autoindex_format json;
  }
}
CONF
  : >"$LOGS/access.log"
  nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -e "$LOGS/nginx-error.log" &
  PIDS+=($!)
  local i
  for ((i = 0; i < 100; i++)); do curl -sf -o /dev/null "$URL/big/" && return 0; sleep 0.1; done
  echo "nginx did not start; see $LOGS/nginx-error.log" >&2
  exit 1
}
# start_python: python3 -m http.server over $WWW (it answers every Range
# request with 200 and the whole file); sets PYURL and PYPID.
start_python() {
  local p
  for p in $(seq 18500 18599); do
    (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { PYPORT=$p; break; }
  done
  PYURL=http://127.0.0.1:$PYPORT
  python3 -m http.server "$PYPORT" --bind 127.0.0.1 --directory "$WWW" >>"$LOGS/python.log" 2>&1 &
  PYPID=$!
  PIDS+=($PYPID)
  local i
  for ((i = 0; i < 100; i++)); do curl -sf -o /dev/null "$PYURL/norange/" && return 0; sleep 0.1; done
  echo "python3 -m http.server did not start; see $LOGS/python.log" >&2
  exit 1
}
# py_read: bytes the python server has read from files (its rchar): what it
# sent, or began to send before a client closed.
py_read() { awk '/^rchar:/ { print $2 }' "/proc/$PYPID/io"; }
log_mark() { wc -l <"$LOGS/access.log"; }
# bytes_since MARK FILE: body bytes nginx sent for FILE (a URI) after MARK;
# waits a moment first: nginx logs a request when it ends.
bytes_since() {
  sleep 0.5
  awk -v m="$1" -v f="$2" 'NR > m && $1 == f { s += $3 } END { printf "%.0f", s }' "$LOGS/access.log"
}

# ---------------------------------------------------------------- mounts
# mount_ours SUBDIR CACHE: mounts $URL/SUBDIR/ at $RUN/mnt (with
# $MOUNT_ARGS; $UP_URL instead of $URL if set); sets MPID, MNT, MOUNT_US
# (time from start to the ready line).
mount_ours() {
  MNT=$RUN/mnt
  mkdir -p "$MNT" "$2"
  : >"$LOGS/mount.log"
  local t0 i
  t0=$(now_us)
  "$BIN" mount --cache-dir "$2" ${MOUNT_ARGS:-} "${UP_URL:-$URL}/$1/" "$MNT" 2>>"$LOGS/mount.log" &
  MPID=$!
  PIDS+=($MPID)
  while (($(now_us) - t0 < 300000000)); do
    grep -q 'ready: ' "$LOGS/mount.log" && { MOUNT_US=$(($(now_us) - t0)); return 0; }
    kill -0 $MPID 2>/dev/null || break
    sleep 0.005
  done
  echo "mount did not become ready:" >&2
  cat "$LOGS/mount.log" >&2
  exit 1
}
umount_ours() {
  kill -TERM "$MPID" 2>/dev/null
  wait "$MPID" 2>/dev/null
  MPID=
}
hwm_kb() { status_kb VmHWM; }
# status_kb FIELD: a figure of the daemon's /proc/PID/status (VmHWM, VmRSS), KiB
status_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$MPID/status"; }
root_xattr() { getfattr --absolute-names -n "user.imgcache.$1" --only-values "$MNT" 2>/dev/null; }
# wait_refreshed BEFORE: waits until the root's catalog_refreshed is no
# longer BEFORE (the catalog refresh after a mount has ended); sets
# REFRESH_US (from the ready line).
wait_refreshed() {
  local t0 i
  t0=$(now_us)
  for ((i = 0; i < 3000; i++)); do
    [ "$(root_xattr catalog_refreshed)" != "$1" ] && { REFRESH_US=$(($(now_us) - t0 + MOUNT_US)); return 0; }
    sleep 0.1
  done
  echo "the catalog was not refreshed within 300 s after the mount" >&2
  exit 1
}
# imgcache_ls KEY ARGS...: runs imgcache ls ARGS on the cache; adds KEY_us
# (wall), KEY_kb (its peak RSS), KEY_bytes (printed) and, with a daemon,
# KEY_daemon_kb (the daemon's peak above its RSS before).
imgcache_ls() {
  local key=$1 base="" t0
  shift
  if [ -n "${MPID:-}" ] && kill -0 "$MPID" 2>/dev/null; then
    echo 5 >"/proc/$MPID/clear_refs" # VmHWM starts again from VmRSS
    base=$(status_kb VmRSS)
  fi
  t0=$(now_us)
  /usr/bin/time -f '%M' -o "$RUN/time.out" "$BIN" ls --cache-dir "$cache" "$@" >"$RUN/ls.out" 2>>"$LOGS/ls.err" ||
    { echo "imgcache ls $* failed:" >&2; cat "$LOGS/ls.err" >&2; exit 1; }
  add "${key}_us" $(($(now_us) - t0))
  add "${key}_kb" "$(tail -1 "$RUN/time.out")"
  add "${key}_bytes" "$(wc -c <"$RUN/ls.out")"
  [ -n "$base" ] && add "${key}_daemon_kb" $(($(status_kb VmHWM) - base))
}

# ---------------------------------------------------------------- measurements
declare -A S=() # samples: key -> "v1 v2 ..."
add() { S[$1]="${S[$1]:-}$2 "; }
last() { local a=(${S[$1]:-}); echo "${a[-1]:-}"; }
# seq_read FILE: dd bs=1M over the whole file; sets MBS (10^6 bytes/s) and
# LAST_US (wall time, open included)
seq_read() {
  local t0 t1 bytes
  t0=$(now_us)
  bytes=$(dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/bytes/ { print $1 }')
  t1=$(now_us)
  LAST_US=$((t1 - t0))
  [ "$bytes" = "$(stat -L -c %s "$1")" ] || { echo "short read of $1: $bytes" >&2; exit 1; }
  MBS=$(awk -v b="$bytes" -v us="$LAST_US" 'BEGIN { printf "%.0f", b / us }')
}
curl_read() {
  local t0 t1 got
  t0=$(now_us)
  got=$(curl -s -o /dev/null -w '%{size_download}' "$1")
  t1=$(now_us)
  awk -v b="$got" -v us="$((t1 - t0))" 'BEGIN { printf "%.0f", b / us }'
}
fio_iops() { # FILE DIRECT
  fio --name=rr --filename="$1" --rw=randread --bs=4k --ioengine=psync --numjobs=4 \
    --runtime="$FIO_RUNTIME" --time_based --group_reporting --invalidate=0 --direct="$2" \
    --output-format=terse --terse-version=3 2>>"$LOGS/fio.err" | awk -F';' '{ print $8 }'
}
backing_file() { find "$1/data" -type f -size +1k | head -1; }

# ---------------------------------------------------------------- statistics
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else printf "%.10g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
med() { [ -n "${S[$1]:-}" ] && median <<<"${S[$1]}"; }
spread() { [ -n "${S[$1]:-}" ] && tr ' ' '\n' <<<"${S[$1]}" | awk 'NF' | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { printf "%s–%s", a, b }'; }
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
# verdict VALUE OP LIMIT
verdict() { awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN { if (v == "n/a" || v == "") { print "n/a"; exit } ok = (op == ">=") ? v >= l : v <= l; print ok ? "met" : "**not met**" }'; }

# go-fuse's loopback without passthrough (../shared/bench/gofuseloop): the
# ceiling of any read a daemon serves, beside our cold read.
build_gofuseloop() {
  local src=$REPO/../shared/bench/gofuseloop
  [ -d "$src" ] || src=/work/shared/bench/gofuseloop
  [ -d "$src" ] && (cd "$src" && go build -o "$RUN/gofuseloop" .) >>"$LOGS/gofuseloop.log" 2>&1 ||
    log "go-fuse loopback not built (see $LOGS/gofuseloop.log): no loopback figures"
}
# loop_read DIR NAME: mounts gofuseloop over DIR with our request sizes and
# kernel read-ahead (254-page READs, read_ahead_kb 8128) and no
# passthrough, reads NAME through it (sets MBS), unmounts.
loop_read() {
  local mnt=$RUN/loopmnt pid i
  MBS=
  [ -x "$RUN/gofuseloop" ] || return 0
  mkdir -p "$mnt"
  "$RUN/gofuseloop" -directmount -maxwrite $((254 * 4096)) "$mnt" "$1" >>"$LOGS/gofuseloop.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  for ((i = 0; i < 200; i++)); do [ -e "$mnt/$2" ] && break; sleep 0.05; done
  echo 8128 >"/sys/class/bdi/$(mountpoint -d "$mnt")/read_ahead_kb"
  seq_read "$mnt/$2"
  kill "$pid"
  wait "$pid" 2>/dev/null
}

# ================================================================ main
mkdir -p "$BASE"
for m in $(awk -v b="$RUN/" 'index($2, b) == 1 { print $2 }' /proc/mounts); do
  echo "bench/run.sh: $m is still mounted (another run?); unmount it first" >&2
  exit 1
done
rm -rf --one-file-system "$RUN"
mkdir -p "$RUN" "$LOGS"
log "building imgcache"
(cd "$REPO" && go build -o "$BIN" ./cmd/imgcache) || exit 1
gen_data
start_nginx
log "nginx on $URL"
HALF=$((SIZE_MB / 2))
# figures of cases that may not run (CASES)
MODE= V_FIO_LOCAL_BUF= V_FIO_OURS_BUF= V_FIO_LOCAL_DIO= V_FIO_OURS_DIO= HWM_SMALL= HWM_BIG= HUGE_MBS=

if want seq; then
  log "=== sequential: cold (vs curl and go-fuse loopback), warm and after remount (vs the backing file)"
  build_gofuseloop
  for ((r = 1; r <= REPS; r++)); do
    cache=$RUN/cache/seq.$r
    add curl "$(curl_read "$URL/big/big.img")"
    loop_read "$WWW/big" big.img; [ -n "$MBS" ] && add loopback "$MBS"
    mount_ours big "$cache"
    MODE=$(getfattr --absolute-names -n user.imgcache.serve_mode --only-values "$MNT" 2>/dev/null)
    mark=$(log_mark)
    seq_read "$MNT/big.img"; add cold "$MBS"
    add cold_us "$LAST_US"
    # At once, as a user who downloads an image and boots it does: no wait
    # for the hash of the new image (it grows with the cold read).
    seq_read "$MNT/big.img"; add reread "$MBS"
    add reread_state "$(getfattr --absolute-names -n user.imgcache.state --only-values "$MNT/big.img" 2>/dev/null)"
    bf=$(backing_file "$cache")
    seq_read "$bf"; add reread_local "$MBS"
    for i in 1 2; do # interleaved: the machine's noise hits both alike
      seq_read "$bf"; add backing "$MBS"
      seq_read "$MNT/big.img"; add warm "$MBS"
    done
    umount_ours
    add cold_bytes "$(bytes_since "$mark" /big/big.img)"
    mount_ours big "$cache"
    seq_read "$MNT/big.img"; add remount "$MBS"
    seq_read "$bf"; add backing "$MBS"
    umount_ours
    log "rep $r (MB/s): curl $(last curl) loopback $(last loopback) cold $(last cold) first re-read $(last reread) ($(last reread_local) local) warm $(last warm) remount $(last remount) backing $(last backing)"
    ((r < REPS)) && rm -rf "$cache"
  done
fi

if want random; then
  log "=== random 4 KiB reads, warm (fio, 4 jobs, ${FIO_RUNTIME}s each)"
  want seq || cache=$RUN/cache/random # else the last sequential run's
  mount_ours big "$cache"
  seq_read "$MNT/big.img"
  bf=$(backing_file "$cache")
  V_FIO_LOCAL_BUF=$(fio_iops "$bf" 0)
  V_FIO_OURS_BUF=$(fio_iops "$MNT/big.img" 0)
  V_FIO_LOCAL_DIO=$(fio_iops "$bf" 1)
  V_FIO_OURS_DIO=$(fio_iops "$MNT/big.img" 1)
  umount_ours
  rm -rf "$cache"
  log "fio buffered: local $V_FIO_LOCAL_BUF ours $V_FIO_OURS_BUF; O_DIRECT: local $V_FIO_LOCAL_DIO ours $V_FIO_OURS_DIO IOPS"
fi

if want partial; then
  log "=== partial access: 1 MiB at 0 + 1 MiB at $HALF MiB, cold"
  for ((r = 1; r <= REPS; r++)); do
    cache=$RUN/cache/partial
    mount_ours big "$cache"
    mark=$(log_mark)
    dd if="$MNT/big.img" of=/dev/null bs=1M count=1 status=none
    dd if="$MNT/big.img" of=/dev/null bs=1M count=1 skip="$HALF" status=none
    umount_ours # ends every fetch: the count is final
    add partial_bytes "$(bytes_since "$mark" /big/big.img)"
    rm -rf "$cache"
  done
fi

if want conc; then
  log "=== 4 concurrent cold readers"
  for ((r = 1; r <= REPS; r++)); do
    cache=$RUN/cache/conc
    mount_ours big "$cache"
    mark=$(log_mark)
    t0=$(now_us)
    pids=()
    for i in 1 2 3 4; do dd if="$MNT/big.img" of=/dev/null bs=1M status=none & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    add conc_us $(($(now_us) - t0))
    umount_ours
    add conc_bytes "$(bytes_since "$mark" /big/big.img)"
    rm -rf "$cache"
  done
fi

if want mem; then
  log "=== memory: peak RSS reading $SIZE_MB MiB and $BIG_MB MiB images cold"
  for ((r = 1; r <= REPS; r++)); do
    cache=$RUN/cache/mem
    mount_ours big "$cache"
    seq_read "$MNT/big.img"
    add hwm_small "$(hwm_kb)"
    umount_ours
    rm -rf "$cache"
    mount_ours huge "$cache"
    seq_read "$MNT/huge.img"; add huge_mbs "$MBS"
    add hwm_big "$(hwm_kb)"
    umount_ours
    rm -rf "$cache"
  done
  HWM_SMALL=$(med hwm_small); HWM_BIG=$(med hwm_big); HUGE_MBS=$(med huge_mbs)
  log "VmHWM: $HWM_SMALL KiB ($SIZE_MB MiB image), $HWM_BIG KiB ($BIG_MB MiB image, read at $HUGE_MBS MB/s)"
fi

if want meta; then
  log "=== metadata: ls -l and getfattr -d of $NFILES images"
  cache=$RUN/cache/many
  mount_ours many "$cache"
  ls -l "$MNT" >/dev/null # warm: lookups and attributes cached
  for ((r = 1; r <= REPS; r++)); do
    t0=$(now_us); ls -l "$MNT" >/dev/null; add ls_us $(($(now_us) - t0))
    t0=$(now_us); (cd "$MNT" && getfattr -d -- * >/dev/null 2>&1); add getfattr_us $(($(now_us) - t0))
  done
  umount_ours
  rm -rf "$cache"
fi

if want index; then
  log "=== a catalog of $NINDEX images in four directories"
  cache=$RUN/cache/index
  # nginx stats every file of a listing before it answers: a cold one
  # can take longer than the default --header-timeout and --stall-timeout
  # on a busy machine. The listings are
  # fetched once first (timed: the baseline of the first mount).
  MOUNT_ARGS="--header-timeout 120s --stall-timeout 120s"
  t0=$(now_us)
  for d in 1 2 3 4; do curl -sf -o /dev/null --max-time 120 "$URL/index/d$d/" || { echo "nginx did not list $URL/index/d$d/" >&2; exit 1; }; done
  add curl_list_us $(($(now_us) - t0))
  # The first mount lists the upstream and fills the index; on a busy
  # machine the listing may outlast the first mount's wait for it (30 s),
  # and the catalog comes with the background refresh that follows.
  mount_ours index "$cache"
  add list_ready_us "$MOUNT_US"
  wait_refreshed ""
  add list_us "$REFRESH_US"
  add list_hwm "$(hwm_kb)"
  n=$(ls "$MNT/d1" | wc -l)
  [ "$n" = $((NINDEX / 4)) ] || { echo "$MNT/d1 lists $n images, want $((NINDEX / 4))" >&2; exit 1; }
  prev=$(root_xattr catalog_refreshed)
  umount_ours
  IMGCACHE_LS_PREFIX=0
  "$BIN" ls --help 2>&1 | grep -q -- --prefix && IMGCACHE_LS_PREFIX=1
  for ((r = 1; r <= REPS; r++)); do
    mount_ours index "$cache" # the catalog comes from the index
    add ready_us "$MOUNT_US"
    add ready_hwm "$(hwm_kb)"
    # A mount with a saved catalog refreshes it from the upstream at once:
    # its peak belongs to the start-up too.
    wait_refreshed "$prev"
    add refresh_hwm "$(hwm_kb)"
    add refresh_us "$REFRESH_US"
    sleep 10
    add settled_rss "$(status_kb VmRSS)"
    # ls of one directory from this process (not the daemon's): the first
    # after the mount (nothing cached in the kernel), then again.
    t0=$(now_us); n=$(ls "$MNT/d2" | wc -l); add ls_cold_us $(($(now_us) - t0))
    [ "$n" = $((NINDEX / 4)) ] || { echo "$MNT/d2 lists $n images, want $((NINDEX / 4))" >&2; exit 1; }
    t0=$(now_us); ls "$MNT/d2" >/dev/null; add ls_warm_us $(($(now_us) - t0))
    t0=$(now_us); ls -f "$MNT/d3" >/dev/null; add ls_f_us $(($(now_us) - t0))
    # imgcache ls through the daemon: wall time, the client's peak, the
    # daemon's peak above its RSS before, bytes printed.
    imgcache_ls ils; imgcache_ls ils_json --json
    ((IMGCACHE_LS_PREFIX)) && imgcache_ls ils_prefix --prefix d4/e-00012 --limit 100
    prev=$(root_xattr catalog_refreshed)
    umount_ours
  done
  # with no daemon: the index read directly
  imgcache_ls ils_offline
  rm -rf "$cache"
  MOUNT_ARGS=
fi

if want norange; then
  log "=== a server that ignores Range: python3 -m http.server, cold reads of a $NR_MB MiB image"
  start_python
  UP_URL=$PYURL
  for ((r = 1; r <= REPS; r++)); do
    cache=$RUN/cache/norange
    mount_ours norange "$cache"
    b0=$(py_read)
    seq_read "$MNT/norange.img"; add norange_mbs "$MBS"
    umount_ours # ends every fetch: the count is final
    add norange_bytes $(($(py_read) - b0))
    rm -rf "$cache"
    # A reader of the middle first (the server sends from byte 0 anyway),
    # then the whole image.
    mount_ours norange "$cache"
    b0=$(py_read)
    dd if="$MNT/norange.img" of=/dev/null bs=1M count=1 skip=$((NR_MB / 2)) status=none
    seq_read "$MNT/norange.img"
    umount_ours
    add norange_mid_bytes $(($(py_read) - b0))
    rm -rf "$cache"
    log "rep $r: python http.server sent $(last norange_bytes) bytes for a cold read, $(last norange_mid_bytes) for a middle-first one"
  done
  UP_URL=
fi

# file_read FILE: bytes file -s reads of FILE (strace of its reads: 7 MiB
# at the start, 7 MiB at the end).
file_read() {
  strace -f -y -e trace=read,pread64 -o "$LOGS/file.strace" file -s "$1" >/dev/null 2>&1
  awk -v f="<$1>" 'index($0, f) { n = $NF; if (n > 0) s += n } END { printf "%.0f", s }' "$LOGS/file.strace"
}
# ext4_work IMAGE: mounts the ext4 image through a read-only loop device,
# lists it and reads every file; prints the bytes the loop device read
# from IMAGE (its sectors read), the client's reads.
ext4_work() {
  local dev dir=$RUN/ext4mnt s0 s1
  mkdir -p "$dir"
  dev=$(losetup -r -f --show "$1") || return 1
  s0=$(awk '{ print $3 }' "/sys/block/${dev#/dev/}/stat") # a loop device's counts outlive its attachments
  mount -o ro,noload "$dev" "$dir" && ls -lR "$dir" >/dev/null && find "$dir" -type f -exec cat {} + >/dev/null
  umount "$dir"
  s1=$(awk '{ print $3 }' "/sys/block/${dev#/dev/}/stat")
  losetup -d "$dev"
  echo $(((s1 - s0) * 512))
}

if want short; then
  log "=== short readers: file -s of the $SIZE_MB MiB image, an ext4 image through a loop device (bytes fetched vs read)"
  for ((r = 1; r <= REPS; r++)); do
    add file_read "$(file_read "$WWW/big/big.img")"
    cache=$RUN/cache/short
    mount_ours big "$cache"
    mark=$(log_mark)
    file -s "$MNT/big.img" >/dev/null
    umount_ours # ends every fetch: the count is final
    add file_bytes "$(bytes_since "$mark" /big/big.img)"
    rm -rf "$cache"
    add ext4_read "$(ext4_work "$WWW/ext4/ext4.img")"
    mount_ours ext4 "$cache"
    mark=$(log_mark)
    add ext4_read_ours "$(ext4_work "$MNT/ext4.img")"
    umount_ours
    add ext4_bytes "$(bytes_since "$mark" /ext4/ext4.img)"
    rm -rf "$cache"
    log "rep $r: file -s read $(last file_read), fetched $(last file_bytes); ext4 read $(last ext4_read) ($(last ext4_read_ours) through the mount), fetched $(last ext4_bytes)"
  done
fi

if want registry; then
  log "=== registry: bench/registry.sh (a ${SIZE_MB} MiB qcow2 artifact on a local docker-registry)"
  REPO=$REPO REPS=$REPS SIZE_MIB=$SIZE_MB bash "$HERE/registry.sh" >"$LOGS/registry.txt" 2>"$LOGS/registry.err" ||
    log "registry.sh failed: see $LOGS/registry.err"
fi

if [ "$PEERS" = 1 ]; then
  log "=== peers (../shared/bench/peers.sh)"
  PEERS_SH=$(cd "$REPO/.." && pwd)/shared/bench/peers.sh
  [ -f "$PEERS_SH" ] || PEERS_SH=/work/shared/bench/peers.sh
  OURS_CMD="$BIN mount --cache-dir {cache} {url} {mnt}" OUT_MD=$BASE/peers-results.md SIZE_MB=$SIZE_MB REPS=$REPS \
    bash "$PEERS_SH" >"$LOGS/peers.log" 2>&1 || log "peers.sh failed: see $LOGS/peers.log"
fi

# ---------------------------------------------------------------- report
CU=$(med curl); BK=$(med backing)
COLD=$(med cold); WARM=$(med warm); REM=$(med remount)
REREAD=$(med reread); REREAD_LOCAL=$(med reread_local); R_REREAD=$(ratio "$REREAD" "$REREAD_LOCAL")
LOOP=$(med loopback); R_LOOP=$(ratio "$COLD" "$LOOP")
PB=$(med partial_bytes); CB=$(med conc_bytes); CCB=$(med cold_bytes)
CONC_S=$(awk -v u="$(med conc_us)" 'BEGIN { printf "%.2f", u / 1e6 }')
ONE_S=$(awk -v u="$(med cold_us)" 'BEGIN { printf "%.2f", u / 1e6 }')
LS_S=$(awk -v u="$(med ls_us)" 'BEGIN { printf "%.3f", u / 1e6 }')
GF_MS=$(awk -v u="$(med getfattr_us)" -v n="$NFILES" 'BEGIN { printf "%.3f", u / 1e3 / n }')
us_range() { tr ' ' '\n' <<<"${S[$1]}" | awk -v d="$2" -v f="$3" 'NF { v = $1 / d; if (min == "" || v < min) min = v; if (v > max) max = v } END { printf "%" f "–%" f, min, max }'; }
R_COLD=$(ratio "$COLD" "$CU"); R_WARM=$(ratio "$WARM" "$BK"); R_REM=$(ratio "$REM" "$BK")
R_FIO=$(ratio "$V_FIO_OURS_BUF" "$V_FIO_LOCAL_BUF"); R_DIO=$(ratio "$V_FIO_OURS_DIO" "$V_FIO_LOCAL_DIO")
R_PART=$(ratio "$PB" 2097152); R_CONCB=$(ratio "$CB" "$SIZE"); R_CONCT=$(ratio "$CONC_S" "$ONE_S")
HWM_S_MB=$(awk -v k="$HWM_SMALL" 'BEGIN { printf "%.1f", k / 1024 }')
HWM_B_MB=$(awk -v k="$HWM_BIG" 'BEGIN { printf "%.1f", k / 1024 }')
R_HWM=$(ratio "$HWM_BIG" "$HWM_SMALL")
FR=$(med file_read); FB=$(med file_bytes); R_FB=$(ratio "$FB" "$FR")
ER=$(med ext4_read); EB=$(med ext4_bytes); R_EB=$(ratio "$EB" "$ER")
NR=$((NR_MB << 20)); NRB=$(med norange_bytes); NRMB=$(med norange_mid_bytes)
R_NRB=$(ratio "$NRB" "$NR"); R_NRMB=$(ratio "$NRMB" "$NR")
# mrow LABEL KEY DIVISOR FORMAT [OP LIMIT]: a row of the catalog table,
# the median of KEY's samples over DIVISOR (min–max), against LIMIT.
mrow() {
  [ -n "${S[$2]:-}" ] || return 0
  local m
  m=$(awk -v v="$(med "$2")" -v d="$3" -v f="$4" 'BEGIN { printf "%" f, v / d }')
  echo "| $1 | $m ($(us_range "$2" "$3" "$4")) | ${5:+$5 $6} | ${5:+$(verdict "$m" "$5" "$6")} |"
}
index_table() {
  echo
  echo "## A catalog of $NINDEX images"
  echo
  echo "Four directories of $((NINDEX / 4)) sparse 1 MiB files, listed by nginx's JSON autoindex. The first mount lists"
  echo "them (before the ready line, or in the background if that takes over 30 s) and fills the index; each of REPS=$REPS remounts serves the catalog from the index (to the ready"
  echo "line), then refreshes it from the upstream at once; RSS is the daemon's (VmHWM, VmRSS of /proc/PID/status),"
  echo "settled 10 s after that refresh. \`ls\` runs in this script's process; \`imgcache ls\` asks the daemon (its"
  echo "peak is the client's; the daemon's is its VmHWM above its VmRSS before, reset through clear_refs), and"
  echo "\`imgcache ls\` with no daemon reads the index. Targets are the issue's, for NINDEX=1000000."
  echo
  echo "| case | imgcache | target | |"
  echo "|---|---:|---|---|"
  mrow "curl of the four listings (nginx, warm after the first), s" curl_list_us 1e6 .2f
  mrow "first mount: to the ready line, s" list_ready_us 1e6 .2f
  mrow "first mount: the catalog listed, s after start" list_us 1e6 .2f
  mrow "peak RSS of the first mount, MiB" list_hwm 1024 .0f
  mrow "remount: ready (catalog from the index), s" ready_us 1e6 .2f "<=" 5
  mrow "remount: peak RSS at ready, MiB" ready_hwm 1024 .0f
  mrow "remount: refresh from the upstream done, s after start" refresh_us 1e6 .2f
  mrow "remount: peak RSS over start-up and that refresh, MiB" refresh_hwm 1024 .0f "<=" 500
  mrow "settled RSS, MiB" settled_rss 1024 .0f
  mrow "\`ls\` of a $((NINDEX / 4))-entry directory, first after the mount, s" ls_cold_us 1e6 .3f "<=" 1
  mrow "\`ls\` of it again, s" ls_warm_us 1e6 .3f "<=" 1
  mrow "\`ls -f\` of another, first after the mount, s" ls_f_us 1e6 .3f "<=" 1
  mrow "\`imgcache ls\`, s" ils_us 1e6 .2f
  mrow "\`imgcache ls\`: its peak RSS, MiB" ils_kb 1024 .1f
  mrow "\`imgcache ls\`: the daemon's peak above its RSS, MiB" ils_daemon_kb 1024 .1f
  mrow "\`imgcache ls\`: output, MB" ils_bytes 1e6 .1f
  mrow "\`imgcache ls --json\`, s" ils_json_us 1e6 .2f
  mrow "\`imgcache ls --json\`: its peak RSS, MiB" ils_json_kb 1024 .1f
  mrow "\`imgcache ls --json\`: the daemon's peak above its RSS, MiB" ils_json_daemon_kb 1024 .1f
  mrow "\`imgcache ls --json\`: output, MB" ils_json_bytes 1e6 .1f
  mrow "\`imgcache ls --prefix d4/e-00012 --limit 100\`, s" ils_prefix_us 1e6 .3f
  mrow "\`imgcache ls --prefix ... --limit 100\`: its peak RSS, MiB" ils_prefix_kb 1024 .1f
  mrow "\`imgcache ls\` with no daemon (reads the index), s" ils_offline_us 1e6 .2f
  mrow "\`imgcache ls\` with no daemon: its peak RSS, MiB" ils_offline_kb 1024 .1f
}
{
  echo "# imgcache benchmark"
  echo
  echo "Generated by \`bash bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${SECONDS} s;"
  echo "$(nproc) CPUs, kernel $(uname -r), $(free -g | awk '/Mem:/ { print $2 }') GiB RAM; cache and images on $(df -T "$BASE" | awk 'NR == 2 { print $2 }')."
  echo "Upstream: nginx $(nginx -v 2>&1 | sed 's/.*\///') on loopback (sendfile, 2 workers). Cases run: $CASES."
  if want seq || want random || want partial || want conc || want mem || want meta || want norange || want short; then
  echo "Serve mode of complete images: **${MODE:-unknown}**."
  echo "Image: ${SIZE_MB} MiB of random bytes; sequential reads are \`dd bs=1M\` of the whole file, wall time including open;"
  echo "MB/s are 10^6 bytes/s. Every figure is the median of REPS=$REPS runs (min–max), baselines taken in the same run."
  echo "The image's digest is published in a SHA256SUMS file beside it (verified as it is read); nothing waits after a cold read."
  echo
  echo "| case | imgcache | baseline | ratio | target | |"
  echo "|---|---:|---:|---:|---|---|"
  want seq && echo "| cold sequential, MB/s | $COLD ($(spread cold)) | curl of the same URL: $CU ($(spread curl)) | $R_COLD | >= 0.60 | $(verdict "$R_COLD" ">=" 0.60) |"
  want seq && echo "| cold sequential vs a daemon-served read, MB/s | $COLD ($(spread cold)) | go-fuse loopback, no passthrough, same request sizes, of the file nginx serves: ${LOOP:-n/a} ($(spread loopback)) | $R_LOOP | >= 0.90 | $(verdict "$R_LOOP" ">=" 0.90) |"
  want seq && echo "| first re-read right after the cold read (no wait), MB/s | $REREAD ($(spread reread)) | the backing file, read next: $REREAD_LOCAL ($(spread reread_local)) | $R_REREAD | >= 0.90 | $(verdict "$R_REREAD" ">=" 0.90) |"
  want seq && echo "| warm sequential, same mount, MB/s | $WARM ($(spread warm)) | the backing file (page cache): $BK ($(spread backing)) | $R_WARM | >= 0.90 | $(verdict "$R_WARM" ">=" 0.90) |"
  want seq && echo "| warm after remount, MB/s | $REM ($(spread remount)) | the same | $R_REM | >= 0.90 | $(verdict "$R_REM" ">=" 0.90) |"
  want random && echo "| random 4 KiB reads, buffered, fio 4 jobs, IOPS | $V_FIO_OURS_BUF | the backing file: $V_FIO_LOCAL_BUF | $R_FIO | >= 0.80 | $(verdict "$R_FIO" ">=" 0.80) |"
  want random && echo "| random 4 KiB reads, O_DIRECT, IOPS | $V_FIO_OURS_DIO | the backing file, O_DIRECT: $V_FIO_LOCAL_DIO | $R_DIO | reported | |"
  want partial && echo "| partial access: 1 MiB at 0 + 1 MiB at $HALF MiB, bytes fetched | $PB ($(spread partial_bytes)) | 2 MiB: 2097152 | $R_PART | <= 2.0 | $(verdict "$R_PART" "<=" 2.0) |"
  want conc && echo "| 4 concurrent cold readers, upstream bytes | $CB ($(spread conc_bytes)) | one image: $SIZE | $R_CONCB | = 1.00 | $(verdict "$R_CONCB" "<=" 1.00) |"
  want conc && echo "| 4 concurrent cold readers, wall s | $CONC_S ($(us_range conc_us 1e6 .2f)) | one cold reader: $ONE_S ($(us_range cold_us 1e6 .2f)) | $R_CONCT | <= 1.5 | $(verdict "$R_CONCT" "<=" 1.5) |"
  want seq && echo "| cold sequential, upstream bytes (one reader) | $CCB | one image: $SIZE | $(ratio "$CCB" "$SIZE") | | |"
  want mem && echo "| peak RSS (VmHWM) reading ${BIG_MB} MiB cold, MiB | $HWM_B_MB ($(us_range hwm_big 1024 .1f)) | < 100 MiB | | < 100 | $(verdict "$HWM_B_MB" "<=" 100) |"
  want mem && echo "| peak RSS, ${BIG_MB} MiB vs ${SIZE_MB} MiB image | $HWM_B_MB | $HWM_S_MB ($(us_range hwm_small 1024 .1f)) | $R_HWM | <= 1.10 | $(verdict "$R_HWM" "<=" 1.10) |"
  want meta && echo "| \`ls -l\` of $NFILES images, warm, s | $LS_S ($(us_range ls_us 1e6 .3f)) | | | < 0.3 | $(verdict "$LS_S" "<=" 0.3) |"
  want meta && echo "| \`getfattr -d\` of $NFILES images, ms per file | $GF_MS | | | < 1 | $(verdict "$GF_MS" "<=" 1) |"
  want short && echo "| \`file -s\` of the image, bytes fetched | $FB ($(spread file_bytes)) | what it read (strace of a local copy): $FR | $R_FB | <= 2.0 | $(verdict "$R_FB" "<=" 2.0) |"
  want short && echo "| ext4 image through a loop device (mount, \`ls -lR\`, read every file), bytes fetched | $EB ($(spread ext4_bytes)) | what the loop device read of a local copy: $ER ($(spread ext4_read)) | $R_EB | <= 2.0 | $(verdict "$R_EB" "<=" 2.0) |"
  want norange && echo "| \`python3 -m http.server\` (ignores Range): bytes it sent for a cold read of $NR_MB MiB | $NRB ($(spread norange_bytes)) | the image: $NR | $R_NRB | = 1.00 | $(verdict "$R_NRB" "<=" 1.00) |"
  want norange && echo "| the same, 1 MiB at the middle read first, then the whole image | $NRMB ($(spread norange_mid_bytes)) | the image: $NR | $R_NRMB | <= 1.05 | $(verdict "$R_NRMB" "<=" 1.05) |"
  echo
  want mem && echo "The ${BIG_MB} MiB image was read cold at $HUGE_MBS MB/s (median; a read that writes more to the cache than the" &&
    echo "kernel lets be dirty at once is paced by writeback to disk)."
  fi
  echo "The machine is shared (2 CPUs, other work running): treat differences under ~15% as noise."
  want index && index_table
  if want registry; then
    echo
    echo "## A registry upstream (bench/registry.sh)"
    echo
    echo "cold: \`dd\` of \`<repo>/<tag>/<title>\` through a fresh mount vs \`curl\` of the same blob; reread: \`dd\` of it again at once;"
    echo "warm: once it shows verified; remount: through a new mount of the same cache; all three vs the cache's backing file (page cache);"
    echo "qemu-img bytes: what the registry sent for \`qemu-img info\`"
    echo "through a fresh mount (its access log). Targets (issue 9): cold >= 0.6, warm >= 0.9, qemu-img <= 4 MiB."
    echo
    echo '```'
    cat "$LOGS/registry.txt" 2>/dev/null
    [ "$(wc -l <"$LOGS/registry.txt" 2>/dev/null || echo 0)" -gt 2 ] || echo "(bench/registry.sh failed in this run: $(tail -1 "$LOGS/registry.err" 2>/dev/null))"
    echo '```'
  fi
  [ "$PEERS" = 1 ] && echo && echo "Peers (httpdirfs, rclone, go-fuse loopback) on the same work: $BASE/peers-results.md."
  echo
  echo "Raw samples:"
  echo
  echo '```'
  for k in $(printf '%s\n' "${!S[@]}" | sort); do echo "$k: ${S[$k]}"; done
  want random && echo "fio IOPS: local buffered $V_FIO_LOCAL_BUF, ours buffered $V_FIO_OURS_BUF, local O_DIRECT $V_FIO_LOCAL_DIO, ours O_DIRECT $V_FIO_OURS_DIO"
  echo '```'
} >"$OUT"
log "wrote $OUT"
cat "$OUT"
