#!/usr/bin/env bash
# Find and ls benchmark (issue 35): coffer against restic, same data, one run.
# SNAPSHOTS backups of DATA_SRC (default /usr/share/doc) with one file changed
# between them, into a local repository each and into S3 (radosgw on 127.0.0.1,
# scripts/s3-server.sh); then `find` of one name across every snapshot, cold (no
# cache: coffer's metadata cache and restic's cache removed, page cache dropped)
# and warm, locally and through scripts/latency-proxy.py at each one-way delay
# in DELAY_MS (default "0 20": 0 and 40 ms round trip); and `ls -l --recursive`
# of the newest snapshot. Prints one table with the ratios coffer / restic.
#   scripts/bench-find.sh [WORKDIR]     (default /tmp/coffer-bench-find)
#   SNAPSHOTS=100  DATA_SRC=/usr/share/doc  DELAY_MS="0 20"
# Needs root (drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic
W="${1:-/tmp/coffer-bench-find}"
N="${SNAPSHOTS:-100}"
SRC="${DATA_SRC:-/usr/share/doc}"
DELAYS="${DELAY_MS:-0 20}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

start_s3_workdir

mkdir -p data
cp -a "$SRC" data/doc
# The file that changes between snapshots, and the name looked for.
changing=data/doc/coffer-bench-changing.txt
name=copyright
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
make_bucket coffer-find
make_bucket restic-find
declare -A REPO=([local]="$W/coffer-repo" [s3]="s3://coffer-find/repo")
declare -A RREPO=([local]="$W/restic-repo" [s3]="s3:$S3_ENDPOINT/restic-find/repo")
for where in local s3; do
    "$coffer" init --repo "${REPO[$where]}" --recipient admin.cert --writer-key-out "w-$where.key" 2>/dev/null
    restic -r "${RREPO[$where]}" init -q >/dev/null
done
echo "making $N snapshots of $(du -sh data | cut -f1) ($(find data -type f | wc -l) files) in each repository..."
for i in $(seq "$N"); do
    echo "version $i" >"$changing"
    for where in local s3; do
        "$coffer" backup --repo "${REPO[$where]}" --writer-key "w-$where.key" --state-dir "state-$where" data >/dev/null 2>&1
        restic -r "${RREPO[$where]}" backup -q data >/dev/null
    done
done

declare -A T
# timed KEY CMD...: milliseconds of CMD (its output discarded) into T[KEY].
timed() {
    local key=$1 t
    shift
    t=$(ms)
    "$@" >/dev/null 2>"$W/last.err" || { echo "failed ($key): $*" >&2; cat "$W/last.err" >&2; exit 1; }
    T[$key]=$(elapsed "$t")
}
cold() { rm -rf "$W/coffer-cache" "$W/restic-cache"; drop_caches; }
rows=()
measure() { # measure LABEL WHERE
    local label=$1 where=$2
    local c=(--repo "${REPO[$where]}" --key admin.key)
    cold
    timed coffer_cold "$coffer" find "${c[@]}" "$name"
    timed coffer_warm "$coffer" find "${c[@]}" "$name"
    # Each tool's ls right after its own finds, while its caches are warm (until
    # 2026-12-07 coffer's ls ran after the `cold` below, so its "warm" row was cold).
    timed coffer_ls "$coffer" ls "${c[@]}" latest -l --recursive
    # restic's cache warms on its first command: the cold figure is its first find
    cold
    timed restic_cold restic -r "${RREPO[$where]}" find "$name"
    timed restic_warm restic -r "${RREPO[$where]}" find "$name"
    timed restic_ls restic -r "${RREPO[$where]}" ls -l latest
    rows+=("$(printf '| find, cold, %s | %s | %s | %s |' "$label" "${T[coffer_cold]}" "${T[restic_cold]}" "$(ratio "${T[coffer_cold]}" "${T[restic_cold]}")")")
    rows+=("$(printf '| find, warm, %s | %s | %s | %s |' "$label" "${T[coffer_warm]}" "${T[restic_warm]}" "$(ratio "${T[coffer_warm]}" "${T[restic_warm]}")")")
    rows+=("$(printf '| ls -l --recursive (warm), %s | %s | %s | %s |' "$label" "${T[coffer_ls]}" "${T[restic_ls]}" "$(ratio "${T[coffer_ls]}" "${T[restic_ls]}")")")
}
measure "local" local
for d in $DELAYS; do
    use_delay "$d"
    # restic names the endpoint in its repository URL: point it at the proxy too.
    RREPO[s3]="s3:$AWS_ENDPOINT_URL/restic-find/repo"
    measure "S3 $((2 * d)) ms RTT" s3
done
use_delay 0

echo
echo "find '$name' across $N snapshots of $SRC (one file changed between them); ms, coffer / restic $(restic version | cut -d' ' -f2)"
echo "| | coffer | restic | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
