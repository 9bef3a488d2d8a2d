#!/usr/bin/env bash
# The benchmark: coffer, restic and borg on the same data, in one run, each with
# a local repository and its default settings (borg: repokey-blake2, lz4;
# restic: its defaults; coffer: its defaults). Prints one table with every
# figure for each tool and coffer's ratio to the best of the other two.
#
#   scripts/bench.sh [WORKDIR]          (default /tmp/coffer-bench)
#
# Data: a copy of /usr/share, a 400 MB random file and a 400 MB compressible
# file (base64 text); version 2 changes, removes and adds ~1% of the files.
# Needs root (drop_caches, FUSE). Installs restic, borgbackup and python3-llfuse
# (borg mount) from Debian if missing; builds coffer in release mode.
# DATA_SRC=/usr/share/doc BIG_BYTES=50000000 makes a quick, small run;
# SPARSE_GIB sets the sparse file's size (default 100; 0 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/bench-lib.sh
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
dpkg-query -W -f='${Status}' python3-llfuse 2>/dev/null | grep -q "install ok" || missing+=(python3-llfuse)
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --quiet
cargo bench --locked --quiet --no-run -p coffer-writer --bench stages 2>/dev/null
# COFFER_BIN=PATH measures another build (e.g. the one before a change) in the same table.
coffer="${COFFER_BIN:-$PWD/target/release/coffer}"
REPO_DIR=$PWD
W="${1:-/tmp/coffer-bench}"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic-repo" RESTIC_CACHE_DIR="$W/restic-cache"
export BORG_PASSPHRASE=bench BORG_REPO="$W/borg-repo" BORG_BASE_DIR="$W/borg-base"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR
TOOLS=(coffer restic borg)

backup_all() { # KEY ARCHIVE_NAME
    drop_caches
    measured coffer "$1" "$coffer" backup --repo "$W/coffer-repo" --writer-key "$W/writer.key" \
        --state-dir "$W/coffer-state" "$W/data"
    drop_caches
    measured restic "$1" restic backup -q "$W/data"
    drop_caches
    measured borg "$1" borg create "::$2" "$W/data"
}

unmount_all
trap unmount_all EXIT
rm -rf "$W"
mkdir -p "$W"
cd "$W"
DATA_SRC="${DATA_SRC:-/usr/share}"
echo "preparing data (copy of $DATA_SRC + $BIG_BYTES random + $BIG_BYTES compressible bytes)..." >&2
mkdir -p data
cp -a "$DATA_SRC" data/share
head -c "$BIG_BYTES" /dev/urandom >data/big.bin
# (base64 makes more than BIG_BYTES; head stops it early, hence the || true)
head -c $((BIG_BYTES * 3 / 4)) /dev/urandom | base64 -w 76 | head -c "$BIG_BYTES" >data/text.txt || true
bytes=$(du -sb data | cut -f1)
probe=$(probe_file "$W/data")
read -r SUBTREE_BYTES SUBTREE <<<"$(subtree_100m "$W/data")"

"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
"$coffer" init --repo coffer-repo --recipient admin.cert --writer-key-out writer.key 2>/dev/null
restic init -q
borg init -e repokey-blake2 >/dev/null 2>&1

echo "backups..." >&2
backup_all first v1
backup_all same v1-again
change_data "$W/data"
backup_all changed v2
borg delete "::v1-again" # two archives, as the other tools' mounts show two versions
for t in "${TOOLS[@]}"; do R[$t,size]=$(du -sb "$W/$t-repo" | cut -f1); done

echo "restores..." >&2
mkdir -p out-coffer out-restic out-borg
drop_caches
measured coffer restore "$coffer" restore --repo "$W/coffer-repo" --key "$W/admin.key" latest --target "$W/out-coffer"
drop_caches
measured restic restore restic restore -q latest --target "$W/out-restic"
drop_caches
measured borg restore sh -c "cd '$W/out-borg' && borg extract ::v2"
rm -rf out-coffer out-restic out-borg

echo "mounts..." >&2
measure_both_mounts coffer-repo "$W/data" "$probe"
# borg shows archives at the top level: mount it one level down so that
# MOUNTPOINT/snapshots/<archive>/<path> matches the others.
mkdir -p "$W/mnt-borg/snapshots"
drop_caches
borg mount "::" "$W/mnt-borg/snapshots" -f >"$W/borg-mount.log" 2>&1 &
MOUNT_PID=$!
measure_mount borg "$W/mnt-borg" "$W/data" "$probe" "$W/mnt-borg/snapshots"

# A sparse file: SPARSE_GIB GiB (default 100) holding 10 MiB of random data
# in ten pieces. Backups to the same repositories (borg with --sparse, which
# needs its fixed chunker), then sparse restores (restic --sparse, borg
# extract --sparse, coffer's default). SPARSE_GIB=0 skips it.
SPARSE_GIB="${SPARSE_GIB:-100}"
if [ "$SPARSE_GIB" -gt 0 ]; then
    echo "sparse file..." >&2
    unmount_all
    mkdir -p "$W/sparse"
    truncate -s "${SPARSE_GIB}G" "$W/sparse/disk.img"
    for i in $(seq 0 9); do
        dd if=/dev/urandom of="$W/sparse/disk.img" bs=1M count=1 conv=notrunc status=none \
            seek=$((i * SPARSE_GIB * 1024 / 10))
    done
    drop_caches
    measured coffer sparse_backup "$coffer" backup --repo "$W/coffer-repo" --writer-key "$W/writer.key" \
        --state-dir "$W/coffer-state" "$W/sparse"
    drop_caches
    measured restic sparse_backup restic backup -q "$W/sparse"
    drop_caches
    measured borg sparse_backup borg create --sparse --chunker-params fixed,4194304 "::sparse" "$W/sparse"
    mkdir -p out-coffer out-restic out-borg
    drop_caches
    measured coffer sparse_restore "$coffer" restore --repo "$W/coffer-repo" --key "$W/admin.key" \
        "latest:$W/sparse" --target "$W/out-coffer"
    drop_caches
    # restic restores holes from 0.15 on (--sparse); an older one would
    # write all the zeros (more than this disk may hold): left out.
    sparse_tools=(coffer borg)
    if restic restore --help | grep -q -- --sparse; then
        sparse_tools+=(restic)
        drop_caches
        measured restic sparse_restore restic restore -q latest --sparse --target "$W/out-restic"
    fi
    drop_caches
    measured borg sparse_restore sh -c "cd '$W/out-borg' && borg extract --sparse ::sparse"
    for t in "${sparse_tools[@]}"; do
        img=$(find "$W/out-$t" -name disk.img | head -n 1)
        R[$t,sparse_disk]=$(( $(stat -c '%b * %B' "$img") ))
        cmp -s "$img" "$W/sparse/disk.img" || { echo "$t: restored disk.img differs" >&2; exit 1; }
    done
    rm -rf out-coffer out-restic out-borg "$W/sparse"
fi

echo "stages..." >&2
drop_caches
stages=$(cd "$REPO_DIR" && cargo bench --locked --quiet -p coffer-writer --bench stages -- "$W/data" 2>/dev/null)
slowest=$(awk '/^slowest stage/ { print $(NF - 1) }' <<<"$stages")

# row LABEL KEY KIND: KIND time (ms, lower is better), rate (MiB/s from
# $bytes, higher is better), mib (MiB, lower is better), bytes (lower).
row() {
    local label=$1 key=$2 kind=$3 c r b best cells=()
    c=${R[coffer,$key]} r=${R[restic,$key]} b=${R[borg,$key]}
    for v in "$c" "$r" "$b"; do
        case $kind in
            time) cells+=("$v ms") ;;
            rate) cells+=("$(mibs "$bytes" "$v")") ;;
            mib) cells+=("$v MiB") ;;
            bytes) cells+=("$((v / 1048576)) MiB") ;;
        esac
    done
    best=$(( r < b ? r : b ))
    if [ "$kind" = rate ]; then
        printf '%-44s %14s %14s %14s %7s\n' "$label" "${cells[@]}" "$(ratio "$best" "$c")x"
    else
        printf '%-44s %14s %14s %14s %7s\n' "$label" "${cells[@]}" "$(ratio "$c" "$best")"
    fi
}
mount_row() { # LABEL KEY, throughput rows: ratio is coffer's speed-up
    local label=$1 key=$2 c=${R[coffer,$2]} r=${R[restic,$2]} b=${R[borg,$2]} best
    best=$(( r < b ? r : b ))
    printf '%-44s %14s %14s %14s %7s\n' "$label" "$(mibs $BIG_BYTES "$c")" "$(mibs $BIG_BYTES "$r")" \
        "$(mibs $BIG_BYTES "$b")" "$(ratio "$best" "$c")x"
}

echo
printf '%-44s %14s %14s %14s %7s\n' "$(numfmt --to=iec "$bytes")B of data, local repositories" coffer restic borg ratio
row "first backup" first time
row "first backup, throughput" first rate
row "backup again, nothing changed" same time
row "backup after changing ~1% of the files" changed time
row "restore the whole snapshot" restore time
row "peak RSS, first backup" first_rss mib
row "repository size" size bytes
row "mount: first byte (unopened dir)" ttfb time
big="$(numfmt --to=iec "$BIG_BYTES")B"
mount_row "mount: read the $big random file, cold" cold
mount_row "mount: read the $big random file, warm" warm
row "mount: ls -lR of the $DATA_SRC copy" lslr time
row "mount: cp -a $(numfmt --to=iec "$SUBTREE_BYTES")B subtree out" cp time
row "mount: diff -r between the versions" diff time
row "mount: peak RSS" rss mib
echo "(ratio: coffer / the best of restic and borg, lower is better; rows ending in x: coffer's speed-up)"
if [ "$SPARSE_GIB" -gt 0 ]; then
    echo
    printf '%-44s %14s %14s %14s %7s\n' "a ${SPARSE_GIB} GiB sparse file with 10 MiB of data" coffer restic borg ratio
    row "backup (borg: --sparse, fixed chunker)" sparse_backup time
    if [ -n "${R[restic,sparse_restore]:-}" ]; then
        row "restore (restic --sparse, borg --sparse)" sparse_restore time
        row "restored file on disk" sparse_disk bytes
    else
        # restic before 0.15 cannot restore holes: coffer against borg.
        printf '%-44s %14s %14s %14s %7s\n' "restore (borg --sparse)" "${R[coffer,sparse_restore]} ms" \
            "n/a (0.14)" "${R[borg,sparse_restore]} ms" "$(ratio "${R[coffer,sparse_restore]}" "${R[borg,sparse_restore]}")"
        printf '%-44s %14s %14s %14s %7s\n' "restored file on disk" "$((R[coffer,sparse_disk] / 1048576)) MiB" \
            "n/a" "$((R[borg,sparse_disk] / 1048576)) MiB" "$(ratio "${R[coffer,sparse_disk]}" "${R[borg,sparse_disk]}")"
    fi
fi
echo
echo "coffer's stages alone on the same data (MiB/s of input; cargo bench -p coffer-writer --bench stages):"
echo "$stages"
echo "first backup end to end: $(mibs "$bytes" "${R[coffer,first]}"), $(awk -v b="$bytes" -v ms="${R[coffer,first]}" -v s="$slowest" \
    'BEGIN { printf "%.0f%%", 100 * b / 1048576 / (ms / 1000) / s }') of the slowest stage (target >= 70%)"
