#!/usr/bin/env bash
# Upload limits (issue 35): `coffer backup --limit-upload RATE` against
# `restic backup --limit-upload` at the same rate, same data, one run. Each tool backs
# up SIZE_MIB of fresh random data (nothing compresses or dedups) into S3 (radosgw on
# 127.0.0.1, scripts/s3-server.sh) through scripts/latency-proxy.py, which logs every
# piece a client sends as it arrives; from that log: the whole run's rate, every
# 10-second window's (sliding by 0.5 s) lowest and highest against the limit, and the
# busiest second. At 0 ms and at each one-way delay in DELAY_MS. Prints one table.
#   scripts/bench-limit.sh [WORKDIR]    (default /tmp/coffer-bench-limit)
#   LIMIT_MIB=10  SIZE_MIB=320  DELAY_MS=20
set -euo pipefail
cd "$(dirname "$0")/.."
COFFER_DEPS=tests source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare restic
W="${1:-/tmp/coffer-bench-limit}"
LIMIT="${LIMIT_MIB:-10}"
SIZE="${SIZE_MIB:-320}"
DELAYS="0 ${DELAY_MS:-20}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR

start_s3_workdir
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null

# pace LOG: the rates in LOG (`SECONDS BYTES` lines) against the limit, as table cells.
pace() {
    python3 - "$1" "$LIMIT" <<'EOF'
import sys
rows = [line.split() for line in open(sys.argv[1])]
at = [float(r[0]) for r in rows]
n = [int(r[1]) for r in rows]
limit = float(sys.argv[2]) * 1048576


def window_sums(width, step):
    """Bytes in each [t, t + width) from the first piece to the last one's start."""
    sums, lo, hi, total, t = [], 0, 0, 0, at[0]
    while t + width <= at[-1] + 1e-9:
        while hi < len(at) and at[hi] < t + width:
            total += n[hi]
            hi += 1
        while lo < hi and at[lo] < t:
            total -= n[lo]
            lo += 1
        sums.append(total)
        t += step
    return sums


span = at[-1] - at[0]
whole = sum(n) / span / limit
tens = [s / 10 / limit for s in window_sums(10.0, 0.5)]
ones = window_sums(1.0, 0.1)
low, high = (min(tens), max(tens)) if tens else (0, 0)
print(f"| {sum(n) / 1048576:.0f} MiB in {span:.1f} s | {whole:.3f} | {low:.3f} | {high:.3f} "
      f"| {max(ones) / limit:.2f} |")
EOF
}

mkdir -p data
for i in $(seq 1 $((SIZE / 10))); do head -c $((10 << 20)) /dev/urandom >"data/r$i.bin"; done
echo "| tool | delay (ms) | sent | whole run / limit | lowest 10 s / limit | highest 10 s / limit | busiest 1 s / limit |"
echo "|---|---|---|---|---|---|---|"
for delay in $DELAYS; do
    make_bucket "coffer-limit-$delay"
    make_bucket "restic-limit-$delay"
    use_delay 0
    "$coffer" init --repo "s3://coffer-limit-$delay/repo" --recipient admin.cert \
        --writer-key-out "w-$delay.key" 2>/dev/null
    restic -r "s3:$S3_ENDPOINT/restic-limit-$delay/repo" init -q >/dev/null

    use_delay "$delay" "" "$W/coffer-$delay.log"
    "$coffer" backup --repo "s3://coffer-limit-$delay/repo" --writer-key "w-$delay.key" \
        --state-dir "state-$delay" --limit-upload "${LIMIT}MiB" "$W/data" >/dev/null 2>coffer.err ||
        { cat coffer.err >&2; exit 1; }
    echo "| coffer | $delay $(pace "$W/coffer-$delay.log")"

    use_delay "$delay" "" "$W/restic-$delay.log"
    restic -r "s3:$AWS_ENDPOINT_URL/restic-limit-$delay/repo" backup -q \
        --limit-upload $((LIMIT * 1024)) "$W/data" >/dev/null 2>restic.err ||
        { cat restic.err >&2; exit 1; }
    echo "| restic 0.14 | $delay $(pace "$W/restic-$delay.log")"
done
