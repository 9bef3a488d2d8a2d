#!/usr/bin/env bash
# Warm-up planning benchmark: what `coffer warm-up` costs to plan one
# directory of a large repository whose data is in DEEP_ARCHIVE, against
# planning the whole snapshot (what a tool without per-path planning
# restores: rustic's warm-up and restic's s3.enable-restore ask for every
# pack a restore of the snapshot reads).
#
#   scripts/bench-warm-up.sh                  (FILES=1000000 SNAPSHOTS=100)
#   WORKDIR=/tmp/coffer-bench-warm-up  FILES=...  SNAPSHOTS=...  DELAY_MS=0
#
# FILES files of 0-2,000 random bytes in directories of 1,000, backed up
# into moto's S3 server (scripts/cold-server.sh) with --storage-class
# DEEP_ARCHIVE, then SNAPSHOTS-1 more times, each after one directory
# changed. Then `warm-up --dry-run --json` of one directory of the latest
# snapshot and of the whole snapshot, each with a cold metadata cache and
# again warm: seconds, the requests moto logged (LIST, HEAD, GET), the packs
# and bytes planned. DELAY_MS puts the latency proxy in between.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
source scripts/bench-lib.sh
bench_prepare
W="${WORKDIR:-/tmp/coffer-bench-warm-up}"
FILES="${FILES:-1000000}"
SNAPSHOTS="${SNAPSHOTS:-100}"
DELAY_MS="${DELAY_MS:-0}"
unset COFFER_REPO COFFER_KEY COFFER_WRITER_KEY COFFER_STATE_DIR
start_s3_workdir cold
make_bucket cold
use_delay "$DELAY_MS"

make_small_files "$W/src" "$FILES" 2000 36
"$coffer" key generate --secret-out admin.key --cert-out admin.cert 2>/dev/null
"$coffer" init --repo s3://cold/r --recipient admin.cert --writer-key-out writer.key \
    --dedup-horizon-days 180 >/dev/null
dirs=$((FILES / 1000))
start=$(ms)
for n in $(seq 1 "$SNAPSHOTS"); do
    if [ "$n" -gt 1 ]; then
        changed=$(printf 'd%05d' $(((n * 7919) % dirs)))
        head -c 1500 /dev/urandom >"src/$changed/f0000"
    fi
    "$coffer" backup --repo s3://cold/r --writer-key writer.key --state-dir state \
        --storage-class DEEP_ARCHIVE src >/dev/null
done
echo "built: $FILES files, $SNAPSHOTS snapshots in $(($(elapsed "$start") / 1000)) s"

# plan LABEL SPEC: one warm-up --dry-run --json; prints seconds, requests
# (by method), packs and bytes planned.
plan() {
    local before after t0 ms_taken out
    before=$(wc -l <"$W/cold/log")
    t0=$(ms)
    out=$("$coffer" warm-up --repo s3://cold/r --key admin.key "$2" --dry-run --json)
    ms_taken=$(elapsed "$t0")
    after=$(wc -l <"$W/cold/log")
    local counts
    counts=$(sed -n "$((before + 1)),${after}p" "$W/cold/log" |
        grep -oE '"(GET|HEAD|POST|PUT) /[^ ?]*(\?list-type)?' |
        awk '{ m = $1; sub(/"/, "", m); if ($2 ~ /list-type/) m = "LIST"; c[m]++ }
             END { for (k in c) printf "%s %d  ", k, c[k] }')
    printf '%-34s %7.2f s  packs %6s  %10s bytes  requests: %s\n' "$1" \
        "$(awk -v m="$ms_taken" 'BEGIN { print m / 1000 }')" \
        "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["packs"])')" \
        "$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["bytes"])')" \
        "$counts"
}
dir=$(printf 'd%05d' $((dirs / 2)))
spec_dir="latest:$W/src/$dir"
spec_all="latest:$W/src"
echo "warm-up planning, DELAY_MS=$DELAY_MS, coffer $(git -C "$scripts/.." rev-parse --short HEAD 2>/dev/null || echo '?')"
rm -rf "$XDG_CACHE_HOME"
plan "one directory, cold cache" "$spec_dir"
plan "one directory, warm cache" "$spec_dir"
rm -rf "$XDG_CACHE_HOME"
plan "whole snapshot, cold cache" "$spec_all"
plan "whole snapshot, warm cache" "$spec_all"
