#!/usr/bin/env bash
# An S3 server on 127.0.0.1 that keeps cold storage classes as AWS does, for the tests
# of cold storage: moto's server mode (PyPI moto[server], installed by
# scripts/install-deps.sh into $COFFER_MOTO_VENV, default /opt/coffer-moto). An object
# stored in GLACIER or DEEP_ARCHIVE answers GET with `403 InvalidObjectState` until a
# RestoreObject for it (which moto completes at once); HEAD and listings show the class.
# radosgw (scripts/s3-server.sh) has no such classes: it stores them and reads them back.
#   scripts/cold-server.sh start DIR [--owner-pid PID]
#       Starts moto on a free port, writes DIR/env (S3_ENDPOINT=...) and DIR/pid.
#       With --owner-pid, a watchdog stops it when PID exits.
#   scripts/cold-server.sh stop DIR
#       Stops it by the PID in DIR/pid and removes DIR.
set -euo pipefail

venv=${COFFER_MOTO_VENV:-/opt/coffer-moto}

usage() {
    echo "usage: $0 start DIR [--owner-pid PID] | stop DIR" >&2
    exit 2
}

moto_server() {
    if [[ -x $venv/bin/moto_server ]]; then
        echo "$venv/bin/moto_server"
    elif command -v moto_server >/dev/null 2>&1; then
        command -v moto_server
    else
        echo "cold-server: moto_server not found: run COFFER_DEPS=tests scripts/install-deps.sh" >&2
        exit 1
    fi
}

stop_dir() {
    local dir=$1 pid
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

watchdog() {
    local owner=$1 dir=$2
    exec </dev/null >/dev/null 2>&1
    while kill -0 "$owner" 2>/dev/null; do
        sleep 1
    done
    stop_dir "$dir"
}

start() {
    local dir=$1 owner=$2 server port
    server=$(moto_server)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$server" -H 127.0.0.1 -p "$port" >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
    if [[ -n $owner ]]; then
        watchdog "$owner" "$dir" &
        disown
    fi
    for _ in $(seq 100); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$port" 2>/dev/null; then
            echo "S3_ENDPOINT=http://127.0.0.1:$port" >"$dir/env"
            echo "cold-server: moto on 127.0.0.1:$port" >&2
            return
        fi
        sleep 0.1
    done
    echo "cold-server: moto did not start:" >&2
    tail -20 "$dir/log" >&2 || true
    stop_dir "$dir"
    exit 1
}

case "${1:-}" in
start)
    [[ $# -ge 2 ]] || usage
    owner=""
    if [[ ${3:-} == --owner-pid ]]; then
        owner=${4:?--owner-pid needs a PID}
    fi
    start "$2" "$owner"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    stop_dir "$2"
    ;;
*) usage ;;
esac
