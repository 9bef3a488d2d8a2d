#!/usr/bin/env bash
# S3 benchmark: coffer and restic against the same S3 server (radosgw on
# 127.0.0.1, scripts/s3-server.sh), on the same data, in one run. Prints one
# table: backups (first, unchanged re-run, after changing 300 files), restore,
# and the mount (first byte, cold/warm read, ls -lR, diff -r, peak RSS).
#   scripts/bench-s3.sh [WORKDIR]     (default /tmp/coffer-bench-s3)
# Needs root (drop_caches, FUSE). The server's objects live in memory (a
# memstore OSD), so this measures coffer, restic and radosgw, not disks.
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
source scripts/bench-lib.sh
command -v restic >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq restic >/dev/null; }
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
scripts="$PWD/scripts"
W="${1:-/tmp/coffer-bench-s3}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

rm -rf "$W"
mkdir -p "$W"
cd "$W"
bash "$scripts/s3-server.sh" start "$W/s3" --owner-pid $$
trap 'bash "$scripts/s3-server.sh" stop "$W/s3"' EXIT
set -a
# shellcheck disable=SC1091
source "$W/s3/env"
set +a
export AWS_ACCESS_KEY_ID="$ADMIN_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$ADMIN_SECRET_KEY"
export AWS_ENDPOINT_URL="$S3_ENDPOINT" AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="s3:$S3_ENDPOINT/restic-bench"
export RESTIC_CACHE_DIR="$W/restic-cache"
# The secret goes to curl on standard input, never on its command line.
printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
    curl -sSf -K - --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "$S3_ENDPOINT/coffer-bench" \
        -H "x-amz-content-sha256: $(sha256sum </dev/null | cut -d' ' -f1)" >/dev/null
repo=s3://coffer-bench/repo

make_data "$W/data"
bytes=$(du -sb "$W/data" | cut -f1)
probe=$(probe_file "$W/data")
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
"$coffer" init --repo "$repo" --recipient admin.cert --writer-key-out writer.key 2>/dev/null
restic init -q

declare -A B
backup_both() { # label
    local t
    drop_caches
    t=$(ms); "$coffer" backup --repo "$repo" --writer-key writer.key --state-dir state "$W/data"
    B[coffer,$1]=$(elapsed "$t")
    drop_caches
    t=$(ms); restic backup -q "$W/data" >/dev/null
    B[restic,$1]=$(elapsed "$t")
}
backup_both first
backup_both same
change_data "$W/data"
sleep 1
backup_both changed

restore_both() {
    local t
    drop_caches
    t=$(ms); "$coffer" restore --repo "$repo" --key admin.key --target "$W/r-coffer" latest
    B[coffer,restore]=$(elapsed "$t")
    drop_caches
    t=$(ms); restic restore -q latest --target "$W/r-restic"
    B[restic,restore]=$(elapsed "$t")
    diff -r --no-dereference "$W/data" "$W/r-coffer$W/data" >/dev/null || { echo "coffer's restore differs" >&2; exit 1; }
    rm -rf "$W/r-coffer" "$W/r-restic"
}
restore_both

measure_both_mounts "$repo" "$W/data" "$probe"

row_time() { # label key [bytes]
    local a=${B[coffer,$2]} b=${B[restic,$2]} ra rb
    ra="${a}ms" rb="${b}ms"
    if [ -n "${3:-}" ]; then
        ra="$ra $(mibs "$3" "$a")" rb="$rb $(mibs "$3" "$b")"
    fi
    printf '%-40s %22s %22s %8s\n' "$1" "$ra" "$rb" "$(ratio "$a" "$b")"
}
echo
echo "over S3 (radosgw on 127.0.0.1), $((bytes / 1048576)) MiB in $(find "$W/data" -type f | wc -l) files"
printf '%-40s %22s %22s %8s\n' "" coffer restic ratio
row_time "first backup" first "$bytes"
row_time "backup again, nothing changed" same
row_time "backup after changing 300 files" changed
row_time "restore the whole snapshot" restore "$bytes"
COLW=22 print_mount_rows coffer restic
echo "(times and RSS: ratio coffer/restic, lower is better; read throughput: coffer's speed-up)"
