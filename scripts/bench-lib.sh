# Shared by the benchmark scripts (sourced, not run): timing, the test data,
# and the mount measurements, so every benchmark measures the same way.

ms() { date +%s%N; }
elapsed() { echo $((($(ms) - $1) / 1000000)); }
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# mibs BYTES MILLISECONDS
mibs() { awk -v b="$1" -v ms="$2" 'BEGIN { printf "%.0f MiB/s", b / 1048576 / (ms > 0 ? ms / 1000 : 0.001) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

# measured TOOL KEY CMD...: runs CMD (output discarded); R[TOOL,KEY] = its
# wall time in ms, R[TOOL,KEY_rss] = its peak RSS in MiB.
measured() {
    local tool=$1 key=$2 out ms rss rc
    shift 2
    out=$(python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
ms = int((time.monotonic() - t) * 1000)
print(ms, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, r.returncode)
' "$@")
    read -r ms rss rc <<<"$out"
    [ "$rc" = 0 ] || { echo "$tool $key failed (exit $rc): $*" >&2; exit 1; }
    R[$tool,$key]=$ms
    R[$tool,${key}_rss]=$rss
}

# unmount_all: unmounts whatever a run left mounted under $W/mnt-* (borg's
# mount sits one level down, at mnt-borg/snapshots).
unmount_all() {
    local m
    for m in "$W"/mnt-*/snapshots "$W"/mnt-*; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || umount -l "$m"; }
    done
    return 0
}

BIG_BYTES=${BIG_BYTES:-400000000}

# make_data DIR: version 1 of the data, a copy of DATA_SRC (default
# /usr/share) plus a BIG_BYTES (400 MB) random file.
make_data() {
    echo "preparing data (copy of ${DATA_SRC:-/usr/share} + $BIG_BYTES random bytes)..." >&2
    mkdir -p "$1"
    cp -a "${DATA_SRC:-/usr/share}" "$1/share"
    head -c "$BIG_BYTES" /dev/urandom >"$1/big.bin"
}

# make_small_files DIR N MAX [SEED]: N files of 0-MAX random bytes in
# directories of 1,000 (d00000/f0000 ...), the same every run for a SEED.
make_small_files() {
    python3 - "$1" "$2" "$3" "${4:-20}" <<'EOF'
import os, random, sys
root, n, most, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:05}")
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, f"f{i % 1000:04}"), "wb") as f:
        f.write(rng.randbytes(rng.randint(0, most)))
EOF
}

# change_data DIR: version 2: 300 files changed (a line appended), 50
# removed, 50 added.
change_data() {
    find "$1/share" -type f -size +1k | sort | awk 'NR % 97 == 0 && ++n <= 300' |
        while read -r f; do echo changed >>"$f"; done
    find "$1/share" -type f | sort | awk 'NR % 89 == 0 && ++n <= 50' | xargs rm -f
    for i in $(seq 50); do echo "new $i" >"$1/share/new-$i"; done
}

# A file in a directory nobody opened yet (for time to first byte), relative
# to the data directory.
probe_file() {
    (cd "$1" && find share -mindepth 3 -type f -size +4k | sort | awk 'NR <= 2000 { p = $0 } END { print p }')
}

# subtree_100m DATA_DIR: the directory under DATA_DIR/share (two levels
# down at most) whose size is closest to 100 MB without passing 110 MB,
# relative to DATA_DIR; with its size in bytes (for `cp -a`).
subtree_100m() {
    (cd "$1" && du -b -d 2 share | awk '$1 <= 110000000 { d = $1 - 100000000; if (d < 0) d = -d;
        if (best == "" || d < bd) { best = $2; bd = d; size = $1 } } END { print size, best }')
}

# measure_mount TOOL MOUNTPOINT DATA_PATH PROBE [UNMOUNT]: the tool's mount
# must be running in the background (its PID in MOUNT_PID), showing two
# snapshots under MOUNTPOINT/snapshots; UNMOUNT (default MOUNTPOINT) is what
# to unmount after. With SUBTREE set (a path under DATA_PATH), copies it out
# with `cp -a` before the diff reads it. Sets
# R[TOOL,ttfb|cold|warm|lslr|cp|diff|rss].
declare -A R
measure_mount() {
    local tool=$1 mnt=$2 data=$3 probe=$4 umnt=${5:-$2} n=0 s1 s2 t
    for _ in $(seq 600); do
        n=$(find "$mnt/snapshots" -mindepth 1 -maxdepth 1 2>/dev/null | grep -cv latest || true)
        [ "$n" -ge 2 ] && break
        sleep 0.1
    done
    [ "$n" -ge 2 ] || { echo "$tool: the mount shows $n snapshots, not 2" >&2; return 1; }
    s1="$mnt/snapshots/$(ls "$mnt/snapshots" | grep -v latest | sort | sed -n 1p)$data"
    s2="$mnt/snapshots/$(ls "$mnt/snapshots" | grep -v latest | sort | sed -n 2p)$data"
    t=$(ms); head -c 1 "$s2/$probe" >/dev/null; R[$tool,ttfb]=$(elapsed "$t")
    t=$(ms); cat "$s2/big.bin" >/dev/null; R[$tool,cold]=$(elapsed "$t")
    t=$(ms); cat "$s2/big.bin" >/dev/null; R[$tool,warm]=$(elapsed "$t")
    t=$(ms); ls -lR "$s2/share" >/dev/null; R[$tool,lslr]=$(elapsed "$t")
    if [ -n "${SUBTREE:-}" ]; then
        rm -rf "$W/cp-out"
        t=$(ms); cp -a "$s2/$SUBTREE" "$W/cp-out"; R[$tool,cp]=$(elapsed "$t")
        rm -rf "$W/cp-out"
    fi
    t=$(ms); diff -r "$s1/share" "$s2/share" >/dev/null 2>&1 || true; R[$tool,diff]=$(elapsed "$t")
    R[$tool,rss]=$(($(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status") / 1024))
    fusermount3 -u "$umnt" || umount -l "$umnt"
    wait "$MOUNT_PID" || true
}

# measure_both_mounts COFFER_REPO DATA_PATH PROBE: mounts coffer (the repo
# given, admin.key, --cache-size CACHE or 512MiB) and restic
# (RESTIC_REPOSITORY), each with cold caches, and measures both. Uses $coffer
# and the work directory $W.
measure_both_mounts() {
    local repo=$1 data=$2 probe=$3
    mkdir -p "$W/mnt-coffer" "$W/mnt-restic"
    drop_caches
    "$coffer" mount --repo "$repo" --key admin.key --cache-size "${CACHE:-512MiB}" \
        "$W/mnt-coffer" 2>"$W/coffer-mount.log" &
    MOUNT_PID=$!
    measure_mount coffer "$W/mnt-coffer" "$data" "$probe"
    drop_caches
    restic mount -q "$W/mnt-restic" >"$W/restic-mount.log" 2>&1 &
    MOUNT_PID=$!
    measure_mount restic "$W/mnt-restic" "$data" "$probe"
}

# print_mount_rows A B: table rows for the mount figures of tools A and B,
# value columns COLW wide (default 14).
print_mount_rows() {
    local a=$1 b=$2 w=${COLW:-14}
    local t="%-40s %$((w - 2))sms %$((w - 2))sms %8s\n" v="%-40s %${w}s %${w}s %8s\n"
    local m="%-40s %$((w - 3))sMiB %$((w - 3))sMiB %8s\n"
    # shellcheck disable=SC2059
    {
        printf "$t" "mount: first byte (unopened dir)" "${R[$a,ttfb]}" "${R[$b,ttfb]}" "$(ratio "${R[$a,ttfb]}" "${R[$b,ttfb]}")"
        printf "$v" "mount: read the big file, cold" "$(mibs $BIG_BYTES "${R[$a,cold]}")" "$(mibs $BIG_BYTES "${R[$b,cold]}")" "$(ratio "${R[$b,cold]}" "${R[$a,cold]}")x"
        printf "$v" "mount: read the big file, warm" "$(mibs $BIG_BYTES "${R[$a,warm]}")" "$(mibs $BIG_BYTES "${R[$b,warm]}")" "$(ratio "${R[$b,warm]}" "${R[$a,warm]}")x"
        printf "$t" "mount: ls -lR of the ${DATA_SRC:-/usr/share} copy" "${R[$a,lslr]}" "${R[$b,lslr]}" "$(ratio "${R[$a,lslr]}" "${R[$b,lslr]}")"
        printf "$t" "mount: diff -r between the versions" "${R[$a,diff]}" "${R[$b,diff]}" "$(ratio "${R[$a,diff]}" "${R[$b,diff]}")"
        printf "$m" "mount: peak RSS" "${R[$a,rss]}" "${R[$b,rss]}" "$(ratio "${R[$a,rss]}" "${R[$b,rss]}")"
    }
}

# For the S3 benchmarks (bench-s3.sh, bench-find.sh): they set W, scripts, PROXY_PID,
# S3_ENDPOINT and the admin's AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
# Starts the latency proxy in front of the S3 server (delay $1 ms each way)
# and points both tools at it; at 0 ms, straight at the server, unless $2
# names a file for the proxy to count the bytes it sends back in, or $3 one
# for it to log what clients send (latency-proxy.py --upload-log).
# LINK_MBIT caps the link (all connections sharing it), JITTER_MS adds up to that much
# delay at random; with either set, the proxy runs at 0 ms too.
use_delay() {
    [ -n "$PROXY_PID" ] && { kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=; }
    if [ "$1" = 0 ] && [ -z "${2:-}${3:-}${LINK_MBIT:-}${JITTER_MS:-}" ]; then
        export AWS_ENDPOINT_URL="$S3_ENDPOINT"
        return
    fi
    rm -f "$W/proxy.port"
    python3 "$scripts/latency-proxy.py" --upstream "${S3_ENDPOINT#http://}" --delay-ms "$1" \
        ${2:+--count-file "$2"} ${3:+--upload-log "$3"} ${LINK_MBIT:+--link-mbit "$LINK_MBIT"} \
        ${JITTER_MS:+--jitter-ms "$JITTER_MS"} >"$W/proxy.port" 2>"$W/proxy.log" &
    PROXY_PID=$!
    for _ in $(seq 50); do [ -s "$W/proxy.port" ] && break; sleep 0.1; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$W/proxy.port")"
}

# start_s3_workdir [SERVER]: a fresh $W with an S3 server in $W/SERVER (stopped, with
# the proxy, when the script exits): `s3`, radosgw (scripts/s3-server.sh, the default),
# or `cold`, moto (scripts/cold-server.sh: archive classes as AWS keeps them; any
# credentials); the admin's credentials, restic's password and coffer's cache and
# config directories exported; the shell is left in $W.
start_s3_workdir() {
    S3_SERVER=${1:-s3}
    rm -rf "$W"
    mkdir -p "$W"
    cd "$W"
    PROXY_PID=
    trap stop_s3_workdir EXIT
    bash "$scripts/$S3_SERVER-server.sh" start "$W/$S3_SERVER" --owner-pid $$
    set -a
    # shellcheck disable=SC1091
    source "$W/$S3_SERVER/env"
    set +a
    export AWS_ACCESS_KEY_ID="${ADMIN_ACCESS_KEY:-bench}" AWS_SECRET_ACCESS_KEY="${ADMIN_SECRET_KEY:-bench}"
    export AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL="$S3_ENDPOINT"
    export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$W/restic-cache"
    export XDG_CACHE_HOME="$W/coffer-cache" XDG_CONFIG_HOME="$W/coffer-config"
}
stop_s3_workdir() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
    bash "$scripts/$S3_SERVER-server.sh" stop "$W/$S3_SERVER"
}

# make_bucket NAME: a bucket on the server, as the admin. The secret goes to
# curl on standard input, never on its command line.
make_bucket() {
    printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" |
        curl -sSf -K - --aws-sigv4 "aws:amz:us-east-1:s3" -X PUT "$S3_ENDPOINT/$1" \
            -H "x-amz-content-sha256: $(sha256sum </dev/null | cut -d' ' -f1)" >/dev/null
}

# bench_prepare TOOL...: installs each peer tool that is missing (the Debian package of
# the same name: restic, rsync), builds the release binary, and sets coffer and scripts.
bench_prepare() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq "$tool" >/dev/null; }
    done
    cargo build --release --locked --quiet
    coffer="$PWD/target/release/coffer"
    scripts="$PWD/scripts"
}
