#!/usr/bin/env bash
# Scale benchmark: coffer and restic, local repositories, in one run.
#
#   scripts/bench-scale.sh [N...]      (default: 100000 1000000)
#   WORKDIR=/tmp/coffer-bench-scale  SNAPSHOTS=2000  CACHE=512MiB
#
# For each N: N files of 0-200 random bytes in directories of 1,000, and
# three 20 MB files; first backup, an unchanged re-run, `find` over the
# snapshot through each tool's mount with cold caches (and the mount's peak
# RSS after it, coffer's --cache-size CACHE), a restore; every time with its
# peak RSS. Then SNAPSHOTS tiny --stdin snapshots of four hosts in one
# repository per tool (0 leaves it out): `snapshots` (the first time and
# again), `forget --keep-daily 7 --dry-run`, and through the mount
# `ls snapshots/` and `ls hosts/*/`, measured when the repositories hold
# SNAPSHOTS/4 snapshots and again at SNAPSHOTS (is it linear?).
# Prints one table per N and one for the snapshots, with ratios
# coffer/restic (lower is better) and coffer's growth from the first N.
# Needs root (drop_caches, FUSE); installs restic if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic
coffer="${COFFER_BIN:-$coffer}"
W="${WORKDIR:-/tmp/coffer-bench-scale}"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100000 1000000)
SNAPSHOTS="${SNAPSHOTS:-2000}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$W/restic-cache"
export XDG_CACHE_HOME="$W/coffer-cache"
# Config pins (known_repositories) of this run only: a bench of another day
# used the same URLs for repositories with other configs.
export XDG_CONFIG_HOME="$W/coffer-config"

unmount_all
trap unmount_all EXIT
rm -rf "$W"
mkdir -p "$W"
cd "$W"
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null

# make_files DIR N: N files of 0-200 random bytes in directories of 1,000,
# and three 20 MB random files.
make_files() {
    make_small_files "$1" "$2" 200 20
    for i in 0 1 2; do head -c 20000000 /dev/urandom >"$1/large$i.bin"; done
}

# mount_and_time TOOL MOUNTPOINT SNAPSHOT_DIR CMD...: mounts TOOL (its repo
# from the environment: CREPO, RESTIC_REPOSITORY) with cold caches, waits
# for snapshots/ to exist (without listing it), runs CMD with SNAPSHOT_DIR's
# path under the mount appended (output discarded); sets T (ms, CMD alone),
# TM (ms, from starting the mount to CMD's end) and RSS (the mount's peak,
# MiB).
mount_and_time() {
    local tool=$1 mnt=$2 sub=$3 pid t t0
    shift 3
    mkdir -p "$mnt"
    drop_caches
    t0=$(ms)
    if [ "$tool" = coffer ]; then
        "$coffer" mount --repo "$CREPO" --key admin.key --cache-size "${CACHE:-512MiB}" "$mnt" 2>"$W/mount.log" &
    else
        restic mount -q "$mnt" >"$W/mount.log" 2>&1 &
    fi
    pid=$!
    for _ in $(seq 6000); do
        [ -d "$mnt/snapshots" ] && break
        sleep 0.01
    done
    t=$(ms)
    "$@" "$mnt/$sub" >/dev/null
    T=$(elapsed "$t")
    TM=$(elapsed "$t0")
    RSS=$(($(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024))
    fusermount3 -u "$mnt" || umount -l "$mnt"
    wait "$pid" || true
}

declare -A S
for n in "${SIZES[@]}"; do
    echo "$n files..." >&2
    rm -rf data out-* coffer-repo restic-repo coffer-state restic-cache coffer-cache writer.key
    make_files "$W/data" "$n"
    CREPO="$W/coffer-repo"
    export RESTIC_REPOSITORY="$W/restic-repo"
    "$coffer" init --repo "$CREPO" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
    restic init -q
    for run in first same; do
        drop_caches
        measured coffer "$run" "$coffer" backup --repo "$CREPO" --writer-key writer.key --state-dir coffer-state "$W/data"
        drop_caches
        measured restic "$run" restic backup -q "$W/data"
    done
    for tool in coffer restic; do
        mount_and_time "$tool" "$W/mnt-$tool" "snapshots/latest$W/data" find
        R[$tool,find]=$T R[$tool,find_rss]=$RSS
        mkdir -p "out-$tool"
        drop_caches
    done
    measured coffer restore "$coffer" restore latest --repo "$CREPO" --key admin.key --target "$W/out-coffer"
    drop_caches
    measured restic restore restic restore -q latest --target "$W/out-restic"
    for tool in coffer restic; do
        for k in first first_rss same same_rss find find_rss restore restore_rss; do
            S[$n,$tool,$k]=${R[$tool,$k]}
        done
    done
done
rm -rf data out-*

if [ "$SNAPSHOTS" -gt 0 ]; then
    echo "$SNAPSHOTS snapshots of four hosts..." >&2
    CREPO="$W/many-coffer"
    export RESTIC_REPOSITORY="$W/many-restic"
    rm -f writer.key
    "$coffer" init --repo "$CREPO" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
    restic init -q
    STEPS=("$((SNAPSHOTS / 4))" "$SNAPSHOTS")
    for i in $(seq "$SNAPSHOTS"); do
        echo "$i" | "$coffer" backup --repo "$CREPO" --writer-key writer.key --state-dir many-state \
            --host "h$((i % 4))" --stdin --stdin-name n.txt
        echo "$i" | restic backup -q --host "h$((i % 4))" --stdin --stdin-filename n.txt >/dev/null
        [ "$i" = "${STEPS[0]}" ] || [ "$i" = "${STEPS[1]}" ] || continue
        measured coffer snapshots "$coffer" snapshots --repo "$CREPO" --key admin.key
        measured restic snapshots restic snapshots -q
        measured coffer forget "$coffer" forget --repo "$CREPO" --key admin.key --keep-daily 7 --dry-run
        measured restic forget restic forget -q --keep-daily 7 --dry-run
        measured coffer snapshots_again "$coffer" snapshots --repo "$CREPO" --key admin.key
        measured restic snapshots_again restic snapshots -q
        for tool in coffer restic; do
            mount_and_time "$tool" "$W/mnt-$tool" snapshots ls
            R[$tool,ls_snapshots]=$TM
            mount_and_time "$tool" "$W/mnt-$tool" hosts sh -c 'for h in "$0"/*/; do ls "$h"; done'
            R[$tool,ls_hosts]=$TM
            for k in snapshots snapshots_again forget ls_snapshots ls_hosts; do
                S[$i,$tool,$k]=${R[$tool,$k]}
            done
        done
    done
fi

row() { # label n key
    local a=${S[$2,coffer,$3]} b=${S[$2,restic,$3]} first=${SIZES[0]} growth=""
    if [ "$2" != "$first" ]; then
        growth="x$(ratio "$a" "${S[$first,coffer,$3]}")"
    fi
    printf '%-44s %12s %12s %8s %10s\n' "$1" "$a" "$b" "$(ratio "$a" "$b")" "$growth"
}
for n in "${SIZES[@]}"; do
    echo
    echo "$n files of 0-200 bytes in directories of 1,000, and three 20 MB files"
    printf '%-44s %12s %12s %8s %10s\n' "" coffer restic ratio "vs ${SIZES[0]}"
    row "first backup (ms)" "$n" first
    row "first backup, peak RSS (MiB)" "$n" first_rss
    row "backup again, nothing changed (ms)" "$n" same
    row "backup again, peak RSS (MiB)" "$n" same_rss
    row "mount: find over the snapshot, cold (ms)" "$n" find
    row "mount: peak RSS after that find (MiB)" "$n" find_rss
    row "restore (ms)" "$n" restore
    row "restore, peak RSS (MiB)" "$n" restore_rss
done
if [ "$SNAPSHOTS" -gt 0 ]; then
    for i in "${STEPS[@]}"; do
        echo
        echo "$i snapshots (tiny --stdin ones, four hosts), times in ms"
        printf '%-44s %12s %12s %8s %10s\n' "" coffer restic ratio "vs ${STEPS[0]}"
        for k in snapshots snapshots_again forget ls_snapshots ls_hosts; do
            label=$k
            case $k in
            snapshots) label="snapshots, after the new backups" ;;
            snapshots_again) label="snapshots, again" ;;
            forget) label="forget --keep-daily 7 --dry-run" ;;
            ls_snapshots) label="mount, then ls snapshots/ (from the mount)" ;;
            ls_hosts) label="mount, then ls hosts/*/ (from the mount)" ;;
            esac
            a=${S[$i,coffer,$k]} growth=""
            [ "$i" = "${STEPS[0]}" ] || growth="x$(ratio "$a" "${S[${STEPS[0]},coffer,$k]}")"
            printf '%-44s %12s %12s %8s %10s\n' "$label" "$a" "${S[$i,restic,$k]}" \
                "$(ratio "$a" "${S[$i,restic,$k]}")" "$growth"
        done
    done
fi
echo "(ratio: coffer/restic, lower is better; growth: coffer's figure over the first N's)"
