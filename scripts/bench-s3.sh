#!/usr/bin/env bash
# S3 benchmark: coffer and restic against the same S3 server (radosgw on
# 127.0.0.1, scripts/s3-server.sh), on the same data, in one run, near and
# a WAN away. For each one-way delay in DELAY_MS (default "0 20": local, and
# 40 ms round trip through scripts/latency-proxy.py), in fresh buckets:
# backups (first, unchanged re-run, after changing 300 files), a restore and
# the mount (first byte, cold/warm read, ls -lR, diff -r, peak RSS) as on a
# new admin box (no cache: restic's cache directory removed), then the mount
# again with what the first left cached; then each tool copies its repository
# into a fresh bucket of the same server (`coffer copy`, `restic copy`), and
# again with nothing new; and coffer backs up an S3 bucket of 1,000 objects (no
# peer can: coffer alone), first and again with nothing changed. Prints one
# table per delay.
#   scripts/bench-s3.sh [WORKDIR]     (default /tmp/coffer-bench-s3)
#   PARTS="tools bucket" (default): "tools" is coffer against restic (backups, restore,
#   mounts, copy: at 20 ms, restic's mount diff alone takes over half an hour), "bucket"
#   the bucket source; PARTS=bucket runs only that, in minutes.
#   DELAY_MS="0 20"  DATA_SRC=/usr/share  BIG_BYTES=400000000  SNAPSHOTS=500
# Needs root (drop_caches, FUSE). The server's objects live in memory (a
# memstore OSD), so this measures coffer, restic and radosgw, not disks.
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic
W="${1:-/tmp/coffer-bench-s3}"
DELAYS="${DELAY_MS:-0 20}"
PARTS="${PARTS:-tools bucket}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

rm -rf "$W"
mkdir -p "$W"
cd "$W"
PROXY_PID=
stop_all() {
    local m
    # A run that stopped half way may leave a mount: never leave it behind.
    for m in "$W"/mnt-*; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || umount -l "$m"; }
    done
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
    bash "$scripts/s3-server.sh" stop "$W/s3"
}
bash "$scripts/s3-server.sh" start "$W/s3" --owner-pid $$
trap stop_all EXIT
set -a
# shellcheck disable=SC1091
source "$W/s3/env"
set +a
export AWS_ACCESS_KEY_ID="$ADMIN_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$ADMIN_SECRET_KEY"
export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$W/restic-cache"
# coffer's metadata cache: $XDG_CACHE_HOME/coffer/<repo id>/metadata.
export XDG_CACHE_HOME="$W/coffer-cache"
# Config pins (known_repositories) of this run only: a bench of another day
# used the same URLs for repositories with other configs.
export XDG_CONFIG_HOME="$W/coffer-config"

make_data "$W/data-v1"
bytes=$(du -sb "$W/data-v1" | cut -f1)
probe=$(probe_file "$W/data-v1")
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null

declare -A B
# copy_both DELAY: each tool's repository into a fresh bucket, S3 to S3
# (restic decrypts and re-encrypts; coffer moves the objects as they are),
# then the same again with nothing new.
copy_both() {
    local t run dst="s3:$AWS_ENDPOINT_URL/restic-copy-$1"
    make_bucket "coffer-copy-$1"
    RESTIC_FROM_PASSWORD=bench restic -r "$dst" init -q --from-repo "$RESTIC_REPOSITORY" --copy-chunker-params >/dev/null
    for run in copy copy_again; do
        t=$(ms); "$coffer" copy --from "$repo" --to "s3://coffer-copy-$1/repo" --state-dir "$W/copy-state"
        B[coffer,$run,$1]=$(elapsed "$t")
        t=$(ms); RESTIC_FROM_PASSWORD=bench restic -r "$dst" copy -q --from-repo "$RESTIC_REPOSITORY" >/dev/null
        B[restic,$run,$1]=$(elapsed "$t")
    done
}

# put_object BUCKET KEY FILE: FILE's bytes as KEY, as the admin (the secret
# on curl's standard input, never its command line).
put_object() {
    printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
        curl -sSf -K - --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "$S3_ENDPOINT/$1/$2" \
            --data-binary @"$3" -H "x-amz-content-sha256: $(sha256sum <"$3" | cut -d' ' -f1)" >/dev/null
}

# bucket_source DELAY: 1,000 objects (999 of the data's files under 4 MiB and
# its largest file) in a fresh bucket, put straight to the server; coffer
# backs the bucket up into a fresh repository through the proxy, then again
# with nothing changed. Sets SRC_BYTES.
bucket_source() {
    local t i=0 f run
    if [ ! -s "$W/src-objects.list" ]; then
        { find "$W/data-v1" -type f -size -4M | awk 'NR <= 999' # (head would SIGPIPE find: pipefail)
          find "$W/data-v1" -type f -printf '%s\t%p\n' | sort -n | tail -1 | cut -f2-
        } >"$W/src-objects.list"
    fi
    SRC_BYTES=$(tr '\n' '\0' <"$W/src-objects.list" | du -cb --files0-from=- | tail -1 | cut -f1)
    make_bucket "src-$1"
    while IFS= read -r f; do
        put_object "src-$1" "obj/$i" "$f"
        i=$((i + 1))
    done <"$W/src-objects.list"
    "$coffer" init --repo "s3://coffer-bench-$1/from-bucket" --recipient admin.cert \
        --writer-key-out "writer-src-$1.key" 2>/dev/null
    for run in bucket bucket_again; do
        t=$(ms)
        "$coffer" backup --repo "s3://coffer-bench-$1/from-bucket" --writer-key "writer-src-$1.key" \
            --state-dir "state-src-$1" "s3://src-$1"
        B[coffer,$run,$1]=$(elapsed "$t")
    done
}

# backup_both LABEL DELAY
backup_both() {
    local t
    drop_caches
    t=$(ms); "$coffer" backup --repo "$repo" --writer-key writer.key --state-dir "state-$2" "$W/data"
    B[coffer,$1,$2]=$(elapsed "$t")
    drop_caches
    t=$(ms); restic backup -q "$W/data" >/dev/null
    B[restic,$1,$2]=$(elapsed "$t")
}

# no_caches: as on a new admin box.
no_caches() { rm -rf "$RESTIC_CACHE_DIR" "$XDG_CACHE_HOME"; }

# restore_both DELAY: with no cache, as on a new admin box.
restore_both() {
    local t
    no_caches
    drop_caches
    t=$(ms); "$coffer" restore --repo "$repo" --key admin.key --target "$W/r-coffer" latest
    B[coffer,restore,$1]=$(elapsed "$t")
    no_caches
    drop_caches
    t=$(ms); restic restore -q latest --target "$W/r-restic"
    B[restic,restore,$1]=$(elapsed "$t")
    diff -r --no-dereference "$W/data" "$W/r-coffer$W/data" >/dev/null || { echo "coffer's restore differs" >&2; exit 1; }
    rm -rf "$W/r-coffer" "$W/r-restic"
}

# keep_mount_figures SUFFIX: the mount figures just measured, kept as KEY_SUFFIX.
keep_mount_figures() {
    local t k
    for t in coffer restic; do
        for k in ttfb cold warm lslr diff rss; do R[$t,${k}_$1]=${R[$t,$k]}; done
    done
}

for d in $DELAYS; do
    echo "at ${d} ms each way..." >&2
    use_delay "$d"
    make_bucket "coffer-bench-$d"
    if part tools; then
        repo="s3://coffer-bench-$d/repo"
        export RESTIC_REPOSITORY="s3:$AWS_ENDPOINT_URL/restic-bench-$d"
        rm -rf "$W/data" "$W/writer.key"
        no_caches
        cp -a "$W/data-v1" "$W/data"
        "$coffer" init --repo "$repo" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
        restic init -q
        backup_both first "$d"
        backup_both same "$d"
        change_data "$W/data"
        sleep 1
        backup_both changed "$d"
        restore_both "$d"
        no_caches
        measure_both_mounts "$repo" "$W/data" "$probe"
        keep_mount_figures "fresh_$d"
        measure_both_mounts "$repo" "$W/data" "$probe"
        keep_mount_figures "warm_$d"
        copy_both "$d"
    fi
    if part bucket; then bucket_source "$d"; fi
done

# Listing many snapshots (SNAPSHOTS, default 500; 0 leaves it out), at the
# last delay: that many tiny `--stdin` backups go straight to the server,
# then each tool lists them through the proxy with no cache (a new admin
# box), then again with what that left cached.
SNAPSHOTS="${SNAPSHOTS:-500}"
if [ "$SNAPSHOTS" -gt 0 ] && part tools; then
    d=${DELAYS##* }
    echo "$SNAPSHOTS snapshots, listed at ${d} ms each way..." >&2
    use_delay 0
    repo="s3://coffer-bench-$d/many"
    export RESTIC_REPOSITORY="s3:$S3_ENDPOINT/restic-many-$d"
    rm -f "$W/writer.key"
    "$coffer" init --repo "$repo" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
    restic init -q
    for i in $(seq "$SNAPSHOTS"); do
        echo "$i" | "$coffer" backup --repo "$repo" --writer-key writer.key --state-dir state-many --stdin --stdin-name n.txt
        echo "$i" | restic backup -q --stdin >/dev/null
    done
    use_delay "$d"
    export RESTIC_REPOSITORY="s3:$AWS_ENDPOINT_URL/restic-many-$d"
    no_caches
    for c in fresh warm; do
        t=$(ms); "$coffer" snapshots --repo "$repo" --key admin.key >/dev/null
        B[coffer,snapshots_$c,$d]=$(elapsed "$t")
        t=$(ms); restic snapshots -q >/dev/null
        B[restic,snapshots_$c,$d]=$(elapsed "$t")
    done
fi

row_time() { # label key delay [bytes]
    local a=${B[coffer,$2,$3]} b=${B[restic,$2,$3]} ra rb
    ra="${a}ms" rb="${b}ms"
    if [ -n "${4:-}" ]; then
        ra="$ra $(mibs "$4" "$a")" rb="$rb $(mibs "$4" "$b")"
    fi
    printf '%-40s %22s %22s %8s\n' "$1" "$ra" "$rb" "$(ratio "$a" "$b")"
}
for d in $DELAYS; do
    echo
    echo "over S3 (radosgw on 127.0.0.1) at $((2 * d)) ms round trip, $((bytes / 1048576)) MiB in $(find "$W/data-v1" -type f | wc -l) files"
    printf '%-40s %22s %22s %8s\n' "" coffer restic ratio
    if part tools; then
        row_time "first backup" first "$d" "$bytes"
        row_time "backup again, nothing changed" same "$d"
        row_time "backup after changing 300 files" changed "$d"
        row_time "restore the whole snapshot (no cache)" restore "$d" "$bytes"
        row_time "copy the repository, S3 to S3" copy "$d" "$bytes"
        row_time "copy again, nothing new" copy_again "$d"
    fi
    if part bucket; then
        a=${B[coffer,bucket,$d]} b=${B[coffer,bucket_again,$d]}
        printf '%-40s %22s %22s %8s\n' "back up a bucket, 1,000 objects" "${a}ms $(mibs "$SRC_BYTES" "$a")" "(none can)" -
        printf '%-40s %22s %22s %8s\n' "  again, nothing changed" "${b}ms $(mibs "$SRC_BYTES" "$b")" "(none can)" -
        echo "  (the bucket: $((SRC_BYTES / 1048576)) MiB in 1,000 objects, put straight to the server)"
    fi
    part tools || continue
    for c in fresh warm; do
        echo "mount, $c cache:"
        for t in coffer restic; do
            for k in ttfb cold warm lslr diff rss; do R[$t,$k]=${R[$t,${k}_${c}_$d]}; done
        done
        COLW=22 print_mount_rows coffer restic
    done
    if [ -n "${B[coffer,snapshots_fresh,$d]:-}" ]; then
        row_time "snapshots: list $SNAPSHOTS, no cache" snapshots_fresh "$d"
        row_time "snapshots: list $SNAPSHOTS, cached" snapshots_warm "$d"
    fi
done
echo "(times and RSS: ratio coffer/restic, lower is better; read throughput: coffer's speed-up)"
