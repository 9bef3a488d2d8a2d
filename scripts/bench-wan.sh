#!/usr/bin/env bash
# WAN benchmark (issue 37): does the distance to the store show? The same
# commands through scripts/latency-proxy.py at 0 ms and at each setting in
# DELAYS (one-way ms, optionally @ a link cap in Mbit/s that all connections
# share: "0 20 50 50@200" is 0, 40 and 100 ms round trip, and 100 ms over a
# 200 Mbit/s link), on fresh
# caches each time (coffer's cache directory and restic's removed, page
# cache dropped), against one repository on radosgw: coffer's restore,
# `coffer cat` of a 100 MB file, and its mount (first byte, the 100 MB file
# cold, ls -lR, cp -a of a subtree, diff -r of two versions, peak RSS);
# restic's restore and `restic dump` of the same file beside it. Each row
# gives the figure at every delay and, for coffer, the ratio to 0 ms.
#   scripts/bench-wan.sh [WORKDIR]     (default /tmp/coffer-bench-wan)
#   DELAYS="0 20 50 50@200"  JITTER_MS=0  DATA_SRC="/usr/share/doc /usr/share/perl5"
#   BIG_BYTES=100000000  CACHE=512MiB
# Needs root (drop_caches, FUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
export BIG_BYTES="${BIG_BYTES:-100000000}"
source scripts/bench-lib.sh
bench_prepare restic
W="${1:-/tmp/coffer-bench-wan}"
DELAYS="${DELAY_MS:-${DELAYS:-0 20 50 50@200}}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR
start_s3_workdir s3
stop_wan() {
    unmount_all
    stop_s3_workdir
}
trap stop_wan EXIT

echo "preparing data (${DATA_SRC:-/usr/share/doc /usr/share/perl5} + $BIG_BYTES random bytes)..." >&2
mkdir -p "$W/data/share"
for d in ${DATA_SRC:-/usr/share/doc /usr/share/perl5}; do cp -a "$d" "$W/data/share/"; done
head -c "$BIG_BYTES" /dev/urandom >"$W/data/big.bin"
bytes=$(du -sb "$W/data" | cut -f1)
files=$(find "$W/data" -type f | wc -l)
probe=$(probe_file "$W/data")
read -r _ SUBTREE < <(subtree_100m "$W/data")
export SUBTREE

make_bucket wan
repo="s3://wan/repo"
export RESTIC_REPOSITORY="s3:$S3_ENDPOINT/wan-restic"
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
"$coffer" init --repo "$repo" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
restic init -q
echo "two backups of each tool, straight to the server..." >&2
for v in 1 2; do
    [ "$v" = 2 ] && { change_data "$W/data"; sleep 1; }
    "$coffer" backup --repo "$repo" --writer-key writer.key --state-dir state "$W/data" >/dev/null
    restic backup -q "$W/data" >/dev/null
done
export RESTIC_REPOSITORY="s3:http://127.0.0.1:0/wan-restic" # set per delay below

fresh() {
    rm -rf "$XDG_CACHE_HOME" "$RESTIC_CACHE_DIR" "$W/out"
    drop_caches
}
declare -A T
for d in $DELAYS; do
    cap=""
    [[ "$d" == *@* ]] && cap=${d#*@}
    echo "at ${d%@*} ms each way${cap:+, the link capped at $cap Mbit/s}..." >&2
    LINK_MBIT="$cap" use_delay "${d%@*}" "$W/proxy.count"
    export RESTIC_REPOSITORY="s3:$AWS_ENDPOINT_URL/wan-restic"
    fresh
    t=$(ms); "$coffer" restore --repo "$repo" --key admin.key latest --target "$W/out" >/dev/null
    T[coffer,restore,$d]=$(elapsed "$t")
    fresh
    t=$(ms); restic restore -q latest --target "$W/out" >/dev/null
    T[restic,restore,$d]=$(elapsed "$t")
    fresh
    t=$(ms); "$coffer" cat --repo "$repo" --key admin.key "latest:$W/data/big.bin" >/dev/null
    T[coffer,cat,$d]=$(elapsed "$t")
    fresh
    t=$(ms); restic dump -q latest "$W/data/big.bin" >/dev/null
    T[restic,cat,$d]=$(elapsed "$t")
    fresh
    mkdir -p "$W/mnt-coffer"
    "$coffer" mount --repo "$repo" --key admin.key --cache-size "${CACHE:-512MiB}" \
        "$W/mnt-coffer" 2>"$W/coffer-mount-$d.log" &
    MOUNT_PID=$!
    measure_mount coffer "$W/mnt-coffer" "$W/data" "$probe"
    for k in ttfb cold lslr cp diff rss; do T[coffer,$k,$d]=${R[coffer,$k]}; done
done

echo
echo "coffer across a WAN: $((bytes / 1048576)) MiB in $files files (radosgw; ratio: at that delay / at 0 ms)"
printf '%-34s' ""
for d in $DELAYS; do
    cap=""
    [[ "$d" == *@* ]] && cap=" ${d#*@} Mbit"
    printf '%22s' "$((2 * ${d%@*})) ms$cap"
done
echo
# row LABEL TOOL KEY [BYTES]: the figure at each delay (ms, or MiB/s with
# BYTES), and for coffer its ratio to the first delay's.
row() {
    local label=$1 tool=$2 key=$3 b=${4:-} first="" d v cell
    printf '%-34s' "$label"
    for d in $DELAYS; do
        v=${T[$tool,$key,$d]}
        [ -z "$first" ] && first=$v
        if [ -n "$b" ]; then cell=$(mibs "$b" "$v"); else cell="${v} ms"; fi
        [ "$tool" = coffer ] && [ "$d" != "${DELAYS%% *}" ] && cell="$cell $(ratio "$v" "$first")x"
        printf '%22s' "$cell"
    done
    echo
}
row "coffer restore" coffer restore "$bytes"
row "restic restore" restic restore "$bytes"
row "coffer cat (100 MB)" coffer cat "$BIG_BYTES"
row "restic dump (100 MB)" restic cat "$BIG_BYTES"
row "mount: first byte" coffer ttfb
row "mount: cat 100 MB, cold" coffer cold "$BIG_BYTES"
row "mount: ls -lR" coffer lslr
row "mount: cp -a $(basename "$SUBTREE")" coffer cp
row "mount: diff -r of two versions" coffer diff
printf '%-34s' "mount: peak RSS (MiB)"
for d in $DELAYS; do printf '%22s' "${T[coffer,rss,$d]}"; done
echo
echo "(ratios for coffer's times: lower is better, 1.00 = the distance does not show; for MiB/s rows: time ratio)"
