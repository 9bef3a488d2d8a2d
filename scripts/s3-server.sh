#!/usr/bin/env bash
# A throw-away S3 server for tests: a single-node Ceph cluster (one monitor,
# one OSD on the in-memory object store, auth none) and radosgw's beast
# frontend, all on 127.0.0.1, all state under DIR.
#
#   scripts/s3-server.sh start DIR [--owner-pid PID]
#       Starts the daemons, creates the users `admin` and `writer`, and writes
#       DIR/env (shell: S3_ENDPOINT, ADMIN_ACCESS_KEY, ...) and DIR/pids.
#       With --owner-pid, a watchdog stops the daemons when PID exits, so a
#       crashed test run leaves nothing behind.
#   scripts/s3-server.sh stop DIR
#       Stops every daemon listed in DIR/pids (by PID) and removes DIR.
#
# Ports: the monitor and radosgw get free ports chosen at start, so several
# clusters can run at once. Needs: ceph-mon ceph-osd radosgw (scripts/install-deps.sh).
set -euo pipefail

usage() {
    echo "usage: $0 start DIR [--owner-pid PID] | stop DIR" >&2
    exit 2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # seconds, description, command...
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "s3-server: timed out waiting for $what; logs in $DIR/log" >&2
            return 1
        fi
        sleep 0.2
    done
}

stop_pids() {
    local dir=$1 pid
    [[ -f $dir/pids ]] || return 0
    # radosgw first, the monitor last.
    for pid in $(tac "$dir/pids"); do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $(cat "$dir/pids"); do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
}

# On any failure: say which command failed, show the daemons' logs, and stop
# what was started.
on_error() {
    local rc=$? line=$1
    echo "s3-server: failed (exit $rc) at line $line: $BASH_COMMAND" >&2
    if [[ -d ${DIR:-}/log ]]; then
        tail -n 20 "$DIR"/log/* >&2 || true
    fi
    stop_pids "${DIR:-/nonexistent}"
    exit "$rc"
}

start() {
    DIR=$1
    trap 'on_error $LINENO' ERR
    local owner=${2:-}
    mkdir -p "$DIR"/{mon,osd,run,log,rgw}
    DIR=$(cd "$DIR" && pwd)
    local t0=$SECONDS mon_port rgw_port fsid conf
    mon_port=$(free_port)
    rgw_port=$(free_port)
    fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    conf=$DIR/ceph.conf
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
mon initial members = a
ms bind msgr2 = false
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
ms mon client mode = crc secure
keyring = /dev/null
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
mon data = $DIR/mon/\$name
osd data = $DIR/osd/\$name
osd objectstore = memstore
memstore device bytes = 8589934592
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd max object name len = 256
osd max object namespace len = 64
# At start an OSD asks the monitor to set its device class and CRUSH
# location; Pacific sometimes sends those commands before it has the
# monmap (fsid 0), the monitor answers "wrong fsid" and the OSD exits (250).
# The script places the OSD in the CRUSH map itself instead.
osd class update on start = false
osd crush update on start = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $DIR/rgw
rgw enable usage log = false
rgw dns name = localhost
EOF
    : >"$DIR/pids"
    monmaptool --create --fsid "$fsid" --addv a "v1:127.0.0.1:$mon_port" "$DIR/monmap" >/dev/null
    ceph-mon -c "$conf" --mkfs -i a --monmap "$DIR/monmap" >/dev/null
    ceph-mon -c "$conf" -i a 2>>"$DIR/log/stderr.log"
    wait_for 30 "the monitor's pid file" test -s "$DIR/run/mon.a.pid"
    cat "$DIR/run/mon.a.pid" >>"$DIR/pids"
    if [[ -n $owner ]]; then
        watchdog "$owner" &
        disown
    fi
    local osd_id osd_uuid
    osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
    osd_id=$(ceph -c "$conf" osd create "$osd_uuid")
    mkdir -p "$DIR/osd/osd.$osd_id"
    ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/mkfs.log" 2>&1
    ceph -c "$conf" osd crush add "osd.$osd_id" 1.0 host=localhost root=default >/dev/null 2>&1
    ceph-osd -c "$conf" -i "$osd_id" 2>>"$DIR/log/stderr.log"
    wait_for 30 "the OSD's pid file" test -s "$DIR/run/osd.$osd_id.pid"
    cat "$DIR/run/osd.$osd_id.pid" >>"$DIR/pids"
    wait_for 60 "the OSD to be up" osd_up "$conf"
    radosgw -c "$conf" -n client.rgw 2>>"$DIR/log/stderr.log"
    wait_for 30 "radosgw's pid file" test -s "$DIR/run/client.rgw.pid"
    cat "$DIR/run/client.rgw.pid" >>"$DIR/pids"
    wait_for 90 "radosgw on port $rgw_port" curl_ok "http://127.0.0.1:$rgw_port/"
    local admin_key admin_secret writer_key writer_secret
    admin_key=$(random_key 20)
    admin_secret=$(random_key 40)
    writer_key=$(random_key 20)
    writer_secret=$(random_key 40)
    rgw_admin user create --uid admin --display-name admin \
        --access-key "$admin_key" --secret-key "$admin_secret" >/dev/null
    rgw_admin user create --uid writer --display-name writer \
        --access-key "$writer_key" --secret-key "$writer_secret" >/dev/null
    cat >"$DIR/env" <<EOF
S3_ENDPOINT=http://127.0.0.1:$rgw_port
ADMIN_ACCESS_KEY=$admin_key
ADMIN_SECRET_KEY=$admin_secret
WRITER_ACCESS_KEY=$writer_key
WRITER_SECRET_KEY=$writer_secret
WRITER_USER=writer
EOF
    chmod 600 "$DIR/env"
    trap - ERR
    echo "s3-server: radosgw on 127.0.0.1:$rgw_port, up in $((SECONDS - t0)) s" >&2
}

rgw_admin() {
    radosgw-admin -c "$DIR/ceph.conf" -n client.rgw --admin-socket= "$@" 2>>"$DIR/log/stderr.log"
}

osd_up() {
    ceph -c "$1" osd stat -f json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["num_up_osds"] >= 1 else 1)'
}

curl_ok() {
    python3 -c 'import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass' "$1"
}

random_key() {
    python3 -c 'import secrets, string, sys; print("".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(int(sys.argv[1]))))' "$1"
}

# Stops the daemons once the owner process is gone.
watchdog() {
    local owner=$1
    exec </dev/null >/dev/null 2>&1
    while kill -0 "$owner" 2>/dev/null; do
        sleep 1
    done
    stop_pids "$DIR"
    rm -rf "$DIR"
}

case "${1:-}" in
start)
    [[ $# -ge 2 ]] || usage
    dir=$2
    owner=""
    if [[ ${3:-} == --owner-pid ]]; then
        owner=${4:?--owner-pid needs a PID}
    fi
    start "$dir" "$owner"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    stop_pids "$2"
    rm -rf "$2"
    ;;
*) usage ;;
esac
