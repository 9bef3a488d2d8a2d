#!/usr/bin/env bash
# End-to-end test of the Debian package (run by scripts/test.sh after the cargo tests):
# builds it with scripts/package.sh, installs it with dpkg into a throwaway root, then
# checks what a host gets: the binary runs with glibc's libraries alone (no libssl), every
# man page renders, the completions load in bash, the systemd units verify, the example
# config parses. Where systemd runs, it also installs the package on this machine, starts
# coffer-backup@coffer-test and checks that a snapshot was written, then purges it.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "tests/package.sh: FAIL: $*" >&2; exit 1; }

deb=$(scripts/package.sh)
[ -f "$deb" ] || fail "scripts/package.sh made no package"
W=$(mktemp -d /tmp/coffer-package-test.XXXXXX)
cleanup() { rm -rf "$W"; }
trap cleanup EXIT

# Install into an empty root with its own dpkg database (libc6 is not there: --force-depends).
root="$W/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
dpkg --root="$root" --force-depends --force-not-root -i "$deb" >"$W/dpkg.log" 2>&1 \
    || { cat "$W/dpkg.log" >&2; fail "dpkg -i $deb"; }
dpkg --root="$root" -s coffer | grep -q '^Status: install ok installed' || fail "dpkg -s coffer"
bin="$root/usr/bin/coffer"
version=$("$bin" --version)
[[ $version == "coffer $(awk -F'"' '/^version =/ { print $2; exit }' Cargo.toml)" ]] \
    || fail "--version says '$version'"
dpkg-deb -f "$deb" Depends | grep -q 'libc6 (>= 2\.' || fail "Depends lacks the minimum glibc"
dpkg-deb -f "$deb" Recommends | grep -q fuse3 || fail "Recommends lacks fuse3"

# Only glibc's libraries (and libgcc_s, glibc's unwinder): no libssl, no libcrypto.
libs=$(ldd "$bin" | awk '{ print $1 }' | sed 's|.*/||' | sort)
for lib in $libs; do
    case "$lib" in
        linux-vdso.so.1 | ld-linux-x86-64.so.2 | libc.so.6 | libm.so.6 | libgcc_s.so.1 \
            | libpthread.so.0 | libdl.so.2 | librt.so.1) ;;
        *) fail "the binary needs $lib (ldd: $(echo $libs))" ;;
    esac
done
# And it runs when those are the only libraries there are: the dynamic loader
# is told to look in a directory holding only them, and not in its cache.
only="$W/only-glibc"
mkdir -p "$only"
ldd "$bin" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | xargs -r cp -L -t "$only"
loader=$(ls "$only"/ld-linux* 2>/dev/null || true)
[ -n "$loader" ] || loader=/lib64/ld-linux-x86-64.so.2
"$loader" --inhibit-cache --library-path "$only" "$bin" --version >/dev/null \
    || fail "the binary does not run with glibc's libraries alone"
"$loader" --inhibit-cache --library-path "$only" "$bin" key generate \
    --secret-out "$W/k.key" --cert-out "$W/k.cert" >/dev/null \
    || fail "key generate (OpenSSL inside) does not run with glibc's libraries alone"

# A man page for coffer and each command, each rendering without warnings.
pages=("$root"/usr/share/man/man1/*.1.gz)
[ "${#pages[@]}" -ge 15 ] || fail "only ${#pages[@]} man pages"
for cmd in backup restore mount snapshots forget prune check copy config-show completions; do
    [ -f "$root/usr/share/man/man1/coffer-$cmd.1.gz" ] || fail "no man page for coffer $cmd"
done
for page in "${pages[@]}"; do
    out=$(MANWIDTH=80 man --warnings -l "$page" 2>"$W/man.err") || fail "man -l $page"
    [ -s "$W/man.err" ] && fail "man -l $page warns: $(cat "$W/man.err")"
    grep -q 'coffer' <<<"$out" || fail "man -l $page rendered nothing"
done

# Completions: bash loads them; zsh's and fish's are where those shells look.
complete=$(bash -c "source '$root/usr/share/bash-completion/completions/coffer' && complete -p coffer")
[[ $complete == *"coffer"* ]] || fail "bash completion: '$complete'"
[ -s "$root/usr/share/zsh/vendor-completions/_coffer" ] || fail "no zsh completion"
[ -s "$root/usr/share/fish/vendor_completions.d/coffer.fish" ] || fail "no fish completion"

# The example config parses (it defines no profile: everything is commented).
"$bin" --config "$root/etc/coffer/config.toml" config show >/dev/null \
    || fail "the example config does not parse"
grep -qx /etc/coffer/config.toml "$root/var/lib/dpkg/info/coffer.conffiles" \
    || fail "/etc/coffer/config.toml is not a conffile"

# The units: systemd-analyze verify, on the root the package was installed to.
units="$root/lib/systemd/system"
[ -f "$units/coffer-backup@.service" ] && [ -f "$units/coffer-backup@.timer" ] || fail "no units"
for opt in ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes StateDirectory=coffer; do
    grep -qx "$opt" "$units/coffer-backup@.service" || fail "the service lacks $opt"
done
if command -v systemd-analyze >/dev/null; then
    # The units they depend on (sysinit.target, network-online.target...) from this
    # machine's systemd; the man pages they cite were checked above.
    cp -rn /lib/systemd/system/. "$units/"
    systemd-analyze verify --man=no --root="$root" \
        "$units/coffer-backup@test.service" "$units/coffer-backup@test.timer" 2>"$W/verify.err" \
        || { cat "$W/verify.err" >&2; fail "systemd-analyze verify"; }
    [ -s "$W/verify.err" ] && { cat "$W/verify.err" >&2; fail "systemd-analyze verify warns"; }
else
    echo "tests/package.sh: systemd-analyze is not installed: units not verified" >&2
fi

# The unit started by systemd, where systemd runs.
# Only on a machine coffer was never installed on: the test removes what it made.
if [ -d /run/systemd/system ] && [ "$(id -u)" = 0 ] && ! dpkg -s coffer >/dev/null 2>&1 \
    && [ ! -e /etc/coffer ] && [ ! -e /var/lib/coffer ]; then
    # The unit sees a private /tmp and may write only below /var/lib/coffer.
    repo=/var/lib/coffer/coffer-test-repo
    dpkg -i "$deb" >/dev/null
    trap 'dpkg --purge coffer >/dev/null; rm -rf /var/lib/coffer /etc/coffer; cleanup' EXIT
    coffer init --repo "$repo" --recipient "$W/k.cert" --writer-key-out /etc/coffer/test-writer.key >/dev/null
    printf '[profiles.coffer-test]\nrepo = "%s"\nwriter-key = "/etc/coffer/test-writer.key"\nsources = ["/etc/coffer"]\n' \
        "$repo" >>/etc/coffer/config.toml
    systemctl daemon-reload
    systemctl start coffer-backup@coffer-test.service || {
        journalctl -u coffer-backup@coffer-test --no-pager | tail -20 >&2
        fail "systemctl start coffer-backup@coffer-test"
    }
    [ "$(ls "$repo/snapshots" | wc -l)" = 1 ] || fail "the unit wrote no snapshot"
    echo "tests/package.sh: systemd ran coffer-backup@coffer-test: one snapshot" >&2
else
    echo "tests/package.sh: skipped starting the unit: systemd is not running here (or coffer was installed before)" >&2
fi

size=$(stat -c %s "$bin")
echo "tests/package.sh: ok: $(basename "$deb") $(($(stat -c %s "$deb") / 1024)) KiB, binary $((size / 1024 / 1024)) MiB, ${#pages[@]} man pages" >&2
