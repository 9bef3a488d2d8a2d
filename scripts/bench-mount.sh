#!/usr/bin/env bash
# Mount benchmark: coffer mount against restic mount on the same data, in one run,
# both on local repositories. Data: a copy of /usr/share plus a 400 MB random file
# (version 1), then a few hundred changed files (version 2). Prints one table.
# Needs root (drop_caches) and FUSE. See scripts/bench-s3.sh for the same over S3.
#   scripts/bench-mount.sh [WORKDIR]     (default /tmp/coffer-bench-mount)
# REUSE=1 keeps the data and repositories of an earlier run in WORKDIR;
# CACHE=256MiB sets the mount's --cache-size (default 512MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic
W="${1:-/tmp/coffer-bench-mount}"
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic-repo" RESTIC_CACHE_DIR="$W/restic-cache"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

snap() {
    "$coffer" backup --repo coffer-repo --writer-key writer.key --state-dir state "$W/data"
    restic backup -q "$W/data" >/dev/null
}
prepare() {
    rm -rf "$W"
    mkdir -p "$W"
    cd "$W"
    make_data "$W/data"
    "$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
    "$coffer" init --repo coffer-repo --recipient admin.cert --writer-key-out writer.key 2>/dev/null
    restic init -q
    snap
    change_data "$W/data"
    sleep 1
    snap
}
if [ "${REUSE:-0}" = 1 ] && [ -d "$W/coffer-repo" ] && [ -d "$W/restic-repo" ]; then
    cd "$W"
else
    prepare
fi
probe=$(probe_file "$W/data")
measure_both_mounts coffer-repo "$W/data" "$probe"

printf '%-40s %14s %14s %8s\n' "mount, same data, local repositories" coffer restic ratio
print_mount_rows coffer restic
echo "(times and RSS: ratio coffer/restic, lower is better; read throughput: coffer's speed-up)"
