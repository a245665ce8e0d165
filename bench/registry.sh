#!/usr/bin/env bash
# The registry rows of issue 9, each beside its baseline in the same run:
# a 1 GiB qcow2 (1 GiB of data) pushed to a local docker-registry as an
# ORAS-style artifact, then
#   cold: dd of <repo>/<tag>/<title> through a fresh mount   vs  curl of the same blob
#   re-read: dd of it again at once through the mount      vs  dd of the cache's backing file
#   warm: dd of it once it is verified (after that re-read) vs  the same
#   remount: dd of it through a new mount of the same cache    vs  the same
#   qemu-img info through a fresh mount: bytes the registry sent (its access log)
# A separate script, not a case of run.sh: making and pushing the image
# takes minutes. REPS (default 3) repetitions; figures are printed as a
# table. Needs docker-registry, skopeo, qemu-img, curl (.ci/setup).
set -euo pipefail
trap 'echo "bench/registry.sh: line $LINENO failed (status $?)" >&2' ERR
cd "${REPO:-$(dirname "$0")/..}" # run.sh passes the checkout it measures
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH
REPS=${REPS:-3}
SIZE_MIB=${SIZE_MIB:-1024}

work=$(mktemp -d /var/tmp/imgcache-bench-oci.XXXXXX)
pids=()
mounts=()
cleanup() {
  for m in "${mounts[@]}"; do mountpoint -q "$m" && umount -l "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/imgcache" ./cmd/imgcache

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
until curl -fs "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.1; done

# The image: a raw file of data made a qcow2, pushed from an OCI layout.
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
head -c "$((SIZE_MIB << 20))" /dev/urandom >"$work/raw"
qemu-img convert -f raw -O qcow2 "$work/raw" "$work/big.qcow2"
rm "$work/raw"
blob() { # FILE MEDIATYPE -> descriptor JSON; the file moves into the layout
  local sum size
  sum=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$sum"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s' "$2" "$sum" "$size"
}
printf '{}' >"$work/config"
config=$(blob "$work/config" application/vnd.oci.empty.v1+json)'}'
disk_sum=$(sha256sum "$work/big.qcow2" | cut -d' ' -f1)
layer=$(blob "$work/big.qcow2" application/octet-stream)',"annotations":{"org.opencontainers.image.title":"big.qcow2"}}'
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.imgcache.bench","config":%s,"layers":[%s]}' \
  "$config" "$layer" >"$work/manifest"
manifest=$(blob "$work/manifest" application/vnd.oci.image.manifest.v1+json)',"annotations":{"org.opencontainers.image.ref.name":"v1"}}'
printf '{"schemaVersion":2,"manifests":[%s]}' "$manifest" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
HOME=$work skopeo copy -q --dest-tls-verify=false "oci:$layout:v1" "docker://127.0.0.1:$port/vm/big:v1"
rm -rf "$layout"
blob_url=http://127.0.0.1:$port/v2/vm/big/blobs/sha256:$disk_sum
size=$((SIZE_MIB << 20))

now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

# mount_fresh [CACHE]: a new mount of the registry, on a new cache unless
# CACHE is given; sets mnt, cache, mpid.
n=0
mount_fresh() {
  n=$((n + 1))
  mnt=$work/mnt$n cache=${1:-$work/cache$n}
  mkdir -p "$mnt"
  "$work/imgcache" mount --cache-dir "$cache" --repo vm/big "oci+http://127.0.0.1:$port" "$mnt" 2>"$work/mount$n.log" &
  mpid=$!
  pids+=("$mpid")
  mounts+=("$mnt")
  until grep -q 'ready: ' "$work/mount$n.log"; do
    kill -0 "$mpid" || { cat "$work/mount$n.log" >&2; exit 1; }
    sleep 0.1
  done
}
unmount() { kill -TERM "$mpid"; wait "$mpid" || true; }
ddtime() { # FILE -> seconds
  local t0 t1
  t0=$(now)
  dd if="$1" of=/dev/null bs=1M status=none
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
sent() { # bytes the registry sent of the disk's blob so far
  awk -v d="sha256:$disk_sum" '$0 ~ "GET /v2/vm/big/blobs/" d " " { for (i = 1; i < NF; i++) if ($i ~ /^(200|206)$/ && $(i+1) ~ /^[0-9]+$/) { s += $(i+1); break } } END { printf "%.0f\n", s }' "$work/registry.log"
}

echo "registry rows: a ${SIZE_MIB} MiB qcow2 artifact on docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null || echo '?') at 127.0.0.1, $REPS runs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-4s %10s %10s %6s %10s %11s %6s %10s %6s %12s %6s %14s %s\n" run "curl MB/s" "cold MB/s" ratio "file MB/s" "reread MB/s" ratio "warm MB/s" ratio "remount MB/s" ratio "qemu-img bytes" "state before re-read"
for r in $(seq "$REPS"); do
  t0=$(now)
  got=$(curl -fs -o /dev/null -w '%{size_download}' "$blob_url")
  t1=$(now)
  [ "$got" = "$size" ] || [ "$got" -gt 0 ] || { echo "curl got $got bytes" >&2; exit 1; }
  curl_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')

  mount_fresh
  file=$mnt/vm/big/v1/big.qcow2
  cold_s=$(ddtime "$file")
  state=$(getfattr --only-values -n user.imgcache.state "$file" 2>/dev/null || echo "?")
  reread_s=$(ddtime "$file")
  for _ in $(seq 300); do # warm: the image settled (verified), at most 30 s
    [ "$(getfattr --only-values -n user.imgcache.state "$file" 2>/dev/null)" = verified ] && break
    sleep 0.1
  done
  warm_s=$(ddtime "$file")
  backing=$(find "$cache/data" -type f -size +1M -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
  cat "$backing" >/dev/null # the page cache holds it, as it holds the mount's
  file_s=$(ddtime "$backing")
  unmount
  mount_fresh "$cache"
  remount_s=$(ddtime "$mnt/vm/big/v1/big.qcow2")
  unmount

  mount_fresh
  before=$(sent)
  qemu-img info "$mnt/vm/big/v1/big.qcow2" >/dev/null
  sleep 0.2 # the registry logs a request after its reply
  qemu_bytes=$(($(sent) - before))
  unmount

  c=$(mbps "$got" "$curl_s") k=$(mbps "$size" "$cold_s") f=$(mbps "$size" "$file_s") w=$(mbps "$size" "$warm_s") e=$(mbps "$size" "$reread_s") m=$(mbps "$size" "$remount_s")
  div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  printf '%-4s %10s %10s %6s %10s %11s %6s %10s %6s %12s %6s %14s %s\n' "$r" "$c" "$k" "$(div "$k" "$c")" \
    "$f" "$e" "$(div "$e" "$f")" "$w" "$(div "$w" "$f")" "$m" "$(div "$m" "$f")" "$qemu_bytes" "$state"
done
