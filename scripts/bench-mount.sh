#!/usr/bin/env bash
# Mount benchmark: coffer mount against restic mount on the same data, in one run.
# Data: a copy of /usr/share plus a 400 MB random file (version 1), then a few hundred
# changed files (version 2). Prints one table. Needs root (drop_caches) and FUSE.
#   scripts/bench-mount.sh [WORKDIR]     (default /tmp/coffer-bench-mount)
# REUSE=1 keeps the data and repositories of an earlier run in WORKDIR;
# TOOLS="coffer" measures only coffer (default: "coffer restic"); CACHE=256MiB sets
# the mount's --cache-size (default 512MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
command -v restic >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq restic >/dev/null; }
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
W="${1:-/tmp/coffer-bench-mount}"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic-repo" RESTIC_CACHE_DIR="$W/restic-cache"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR
TOOLS="${TOOLS:-coffer restic}"

ms() { date +%s%N; }
elapsed() { echo $(( ($(ms) - $1) / 1000000 )); }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

prepare() {
rm -rf "$W" && mkdir -p "$W" && cd "$W"
echo "preparing data (copy of /usr/share + 400 MB random file)..." >&2
mkdir data && cp -a /usr/share data/share && head -c 400000000 /dev/urandom > data/big.bin
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
"$coffer" init --repo coffer-repo --recipient admin.cert --writer-key-out writer.key 2>/dev/null
restic init -q
snap() {
  "$coffer" backup --repo coffer-repo --writer-key writer.key --state-dir state "$W/data"
  restic backup -q "$W/data" >/dev/null
}
snap
# Version 2: change 300 files (append a line), remove 50, add 50.
find data/share -type f -size +1k | sort | awk 'NR % 97 == 0 && ++n <= 300' | while read -r f; do echo changed >> "$f"; done
find data/share -type f | sort | awk 'NR % 89 == 0 && ++n <= 50' | xargs rm -f
for i in $(seq 50); do echo "new $i" > "data/share/new-$i"; done
sleep 1; snap
}
if [ "${REUSE:-0}" = 1 ] && [ -d "$W/coffer-repo" ] && [ -d "$W/restic-repo" ]; then
  cd "$W"
else
  prepare
fi

# A file in a directory nobody opened yet, for time to first byte.
probe_rel="$(cd data && find share -mindepth 3 -type f -size +4k | sort | sed -n 2000p)"

declare -A R
run_tool() {
  local tool=$1 mnt="$W/mnt-$1"; mkdir -p "$mnt"
  drop
  if [ "$tool" = coffer ]; then
    "$coffer" mount --repo coffer-repo --key admin.key --cache-size "${CACHE:-512MiB}" "$mnt" 2>"$W/$tool.log" &
  else
    restic mount -q "$mnt" >"$W/$tool.log" 2>&1 &
  fi
  local pid=$!
  for _ in $(seq 300); do [ -d "$mnt/snapshots" ] && [ "$(ls "$mnt/snapshots" | wc -l)" -ge 3 ] && break; sleep 0.1; done
  local s1 s2; s1="$mnt/snapshots/$(ls "$mnt/snapshots" | grep -v latest | sort | sed -n 1p)"
  s2="$mnt/snapshots/$(ls "$mnt/snapshots" | grep -v latest | sort | sed -n 2p)"
  local d1="$s1$W/data" d2="$s2$W/data" t
  t=$(ms); head -c 1 "$d2/$probe_rel" >/dev/null; R[$tool,ttfb]=$(elapsed "$t")
  t=$(ms); cat "$d2/big.bin" >/dev/null; R[$tool,cold]=$(elapsed "$t")
  t=$(ms); cat "$d2/big.bin" >/dev/null; R[$tool,warm]=$(elapsed "$t")
  t=$(ms); ls -lR "$d2/share" >/dev/null; R[$tool,lslr]=$(elapsed "$t")
  t=$(ms); diff -r "$d1/share" "$d2/share" >/dev/null || true; R[$tool,diff]=$(elapsed "$t")
  R[$tool,rss]=$(( $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024 ))
  fusermount3 -u "$mnt" || umount -l "$mnt"
  wait "$pid" || true
}
for tool in $TOOLS; do run_tool "$tool"; done
for k in ttfb cold warm lslr diff rss; do : "${R[restic,$k]:=1}"; done

mibs() { awk -v ms="$1" 'BEGIN { printf "%.0f MiB/s", 400000000 / 1048576 / (ms / 1000) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '%-40s %14s %14s %8s\n' "mount, same data" coffer restic ratio
printf '%-40s %12sms %12sms %8s\n' "time to first byte (unopened dir)" "${R[coffer,ttfb]}" "${R[restic,ttfb]}" "$(ratio "${R[coffer,ttfb]}" "${R[restic,ttfb]}")"
printf '%-40s %14s %14s %8s\n' "read 400 MB file, cold" "$(mibs "${R[coffer,cold]}")" "$(mibs "${R[restic,cold]}")" "$(ratio "${R[restic,cold]}" "${R[coffer,cold]}")x"
printf '%-40s %14s %14s %8s\n' "read 400 MB file, warm" "$(mibs "${R[coffer,warm]}")" "$(mibs "${R[restic,warm]}")" "$(ratio "${R[restic,warm]}" "${R[coffer,warm]}")x"
printf '%-40s %12sms %12sms %8s\n' "ls -lR of /usr/share copy" "${R[coffer,lslr]}" "${R[restic,lslr]}" "$(ratio "${R[coffer,lslr]}" "${R[restic,lslr]}")"
printf '%-40s %12sms %12sms %8s\n' "diff -r between the two versions" "${R[coffer,diff]}" "${R[restic,diff]}" "$(ratio "${R[coffer,diff]}" "${R[restic,diff]}")"
printf '%-40s %11sMiB %11sMiB %8s\n' "peak RSS of the mount" "${R[coffer,rss]}" "${R[restic,rss]}" "$(ratio "${R[coffer,rss]}" "${R[restic,rss]}")"
echo "(times: lower is better, ratio coffer/restic; throughput ratios are coffer's speed-up)"
