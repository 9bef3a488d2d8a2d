#!/usr/bin/env bash
# Restore over a live tree (issue 35): coffer against restic and rsync, same data, one
# run. DATA_SRC (default /usr/share) is backed up by each tool into a local repository
# and into S3 (radosgw on 127.0.0.1, scripts/s3-server.sh). Each snapshot is restored
# into an empty target (the full restore); then a copy of that tree has 1% of its files
# changed (a byte in the middle of every 100th file) and 20 files added, and the snapshot is
# restored over it: `coffer restore --overwrite --delete`; `restic restore` (Debian's
# 0.14 has no --overwrite modes: it writes every file); `rsync -a --delete` from the
# source as the local yardstick. S3 is read through scripts/latency-proxy.py, which
# counts the bytes it sends back, at 0 ms and at each one-way delay in DELAY_MS; coffer
# runs with its metadata cache cold (removed) and warm (left by the full restore). Every
# tree coffer restores over is checked with `rsync -naicHAX --delete` (prints nothing
# when the tree is the source's). Prints one table.
#   scripts/bench-restore.sh [WORKDIR]    (default /tmp/coffer-bench-restore)
#   DATA_SRC=/usr/share  DELAY_MS=20
# Needs root (drop_caches, owners).
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic rsync
W="${1:-/tmp/coffer-bench-restore}"
SRC="${DATA_SRC:-/usr/share}"
DELAYS="${DELAY_MS:-20}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

start_s3_workdir

mkdir -p data
cp -a "$SRC" data/share
data="$W/data"
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
make_bucket coffer-restore
make_bucket restic-restore
declare -A REPO=([local]="$W/coffer-repo" [s3]="s3://coffer-restore/repo")
declare -A RREPO=([local]="$W/restic-repo" [s3]="s3:$S3_ENDPOINT/restic-restore/repo")
echo "backing up $(du -sh data | cut -f1) ($(find data -type f | wc -l) files) with each tool..."
for where in local s3; do
    "$coffer" init --repo "${REPO[$where]}" --recipient admin.cert --writer-key-out "w-$where.key" 2>/dev/null
    "$coffer" backup --repo "${REPO[$where]}" --writer-key "w-$where.key" --state-dir "state-$where" "$data" >/dev/null 2>&1
    restic -r "${RREPO[$where]}" init -q >/dev/null
    restic -r "${RREPO[$where]}" backup -q "$data" >/dev/null
done

# The files changed in the live tree (relative to the data), and their bytes
# in the snapshot: what a restore over it must at least write.
(cd data && find . -type f -size +0 | sort | awk 'NR % 100 == 0') >changed.list
changed_files=$(wc -l <changed.list)
changed_bytes=$(cd data && tr '\n' '\0' <"$W/changed.list" | du -cb --files0-from=- | tail -1 | cut -f1)
# spoil DIR: the live tree's changes since the snapshot: a byte in the middle of each
# changed file overwritten (so the chunk holding it must be read again; an append would
# leave every chunk in place), and files added.
spoil() {
    while read -r f; do
        printf X | dd of="$1/$f" bs=1 seek=$(($(stat -c %s "$1/$f") / 2)) conv=notrunc status=none
    done <changed.list
    for i in $(seq 20); do echo "added $i" >"$1/added-$i"; done
}
same_as_data() {
    local diffs
    diffs=$(rsync -naicHAX --delete "$data/" "$1/")
    [ -z "$diffs" ] || { echo "restore over the tree left differences:" >&2; echo "$diffs" | head >&2; exit 1; }
}

declare -A T B
# timed KEY CMD...: milliseconds of CMD (its output discarded) into T[KEY].
timed() {
    local key=$1 t
    shift
    t=$(ms)
    if ! "$@" >/dev/null 2>"$W/last.err" && [ -z "${RESTIC_MAY_FAIL:-}" ]; then
        echo "failed ($key): $*" >&2
        tail -20 "$W/last.err" >&2
        exit 1
    fi
    T[$key]=$(elapsed "$t")
}
# counted KEY CMD...: timed, and B[KEY] = bytes the proxy sent back meanwhile.
counted() {
    local key=$1 before=0 after=0
    shift
    [ -s "$W/sent" ] && before=$(cat "$W/sent")
    timed "$key" "$@"
    [ -s "$W/sent" ] && after=$(cat "$W/sent")
    B[$key]=$((after - before))
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
# read_note KEY: ", N MiB read" where the proxy counted (S3), else nothing.
read_note() { [ "$where" = local ] || echo ", $(mib "${B[$1]}") MiB read"; }
rows=()
measure() { # measure LABEL WHERE
    local label=$1 where=$2
    local c=(--repo "${REPO[$where]}" --key admin.key)
    rm -rf full live rfull rlive "$W/coffer-cache" "$W/restic-cache"
    drop_caches
    counted coffer_full "$coffer" restore "${c[@]}" "latest:$data" --target full
    cp -a full live
    spoil live
    drop_caches
    counted coffer_warm "$coffer" restore "${c[@]}" "latest:$data" --target live --overwrite --delete
    same_as_data live
    spoil live
    rm -rf "$W/coffer-cache"
    drop_caches
    counted coffer_cold "$coffer" restore "${c[@]}" "latest:$data" --target live --overwrite --delete
    same_as_data live
    drop_caches
    # restic 0.14 restores whole snapshots (no SNAPSHOT:PATH): the data lands
    # at its absolute path below the target.
    counted restic_full restic -r "${RREPO[$where]}" restore latest --target rfull
    cp -a rfull rlive
    spoil "rlive$data"
    drop_caches
    # restic 0.14 over an existing tree fails on every symlink already there
    # ("file exists") and exits 1 after writing the rest: timed anyway.
    RESTIC_MAY_FAIL=1 counted restic_over restic -r "${RREPO[$where]}" restore latest --target rlive
    rows+=("$(printf '| full restore into an empty target, %s | %s | %s | %s |' "$label" "${T[coffer_full]} ms$(read_note coffer_full)" "${T[restic_full]} ms$(read_note restic_full)" "$(ratio "${T[coffer_full]}" "${T[restic_full]}")")")
    for cache in warm cold; do
        local key=coffer_$cache
        rows+=("$(printf '| over the live tree, cache %s, %s | %s (%s of full) | %s | %s |' "$cache" "$label" \
            "${T[$key]} ms$(read_note "$key")" "$(ratio "${T[$key]}" "${T[coffer_full]}")" \
            "${T[restic_over]} ms$(read_note restic_over)" "$(ratio "${T[$key]}" "${T[restic_over]}")")")
    done
}
for d in 0 $DELAYS; do
    rm -f "$W/sent"
    use_delay "$d" "$W/sent"
    # restic names the endpoint in its repository URL: point it at the proxy too.
    RREPO[s3]="s3:$AWS_ENDPOINT_URL/restic-restore/repo"
    measure "S3 $((2 * d)) ms RTT" s3
done
use_delay 0
# Locally there is no proxy to count bytes: times only.
rm -f "$W/sent"
measure "local" local
cp -a full rsl
spoil rsl
drop_caches
timed rsync rsync -aHAX --delete "$data/" rsl/

echo
echo "restore of $SRC over a tree with $changed_files files changed (1%, $(mib "$changed_bytes") MiB in the snapshot) and 20 added;"
echo "coffer restore --overwrite --delete against restic $(restic version | cut -d' ' -f2) restore (which writes every file, and fails on each symlink already there)"
echo "| | coffer | restic | ratio |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo "| rsync -aHAX --delete from the source, local | ${T[rsync]} ms | | coffer (warm) / rsync $(ratio "${T[coffer_warm]}" "${T[rsync]}") |"
