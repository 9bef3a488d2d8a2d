#!/usr/bin/env bash
# Installs, idempotently, the Debian 12 packages coffer builds and tests with.
# Needs root (or sudo) only when something is missing. With COFFER_DEPS=tests
# (scripts/test.sh) it adds the S3 test server: Debian's Ceph monitor, OSD and
# radosgw (scripts/s3-server.sh runs them as a single-node cluster).
set -euo pipefail

packages=(
  pkg-config libssl-dev libclang-dev   # sequoia-openpgp's OpenSSL backend (bindgen needs libclang)
  gnupg zstd                           # tests decrypt stored blobs with the real gpg and zstd
  fuse3                                # the mount (fusermount3)
  util-linux                           # setpriv: tests run the writer as an unprivileged user
  rsync                                # tests copy out of the mount with rsync -a, compare with -AX
  acl attr libcap2-bin                 # tests set and read ACLs, xattrs and capabilities (setfacl, getcap)
  unzip tar                            # tests unpack what export writes with the standard tools
  python3
  make perl                            # scripts/package.sh: OpenSSL built from source (openssl-src)
  binutils                             # scripts/package.sh: objdump reads the glibc the binary needs
)
if [[ ${COFFER_DEPS:-} == tests ]]; then
  packages+=(ceph-mon ceph-osd radosgw ceph-common)
  packages+=(man-db systemd)           # tests/package.sh: man -l each page, systemd-analyze verify
  packages+=(python3-venv)             # scripts/cold-server.sh: moto, from PyPI, in a venv
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# moto's S3 server (scripts/cold-server.sh: cold storage classes as AWS keeps them),
# from PyPI into its own venv, pinned to the series NOTES-crates.md measured.
if [[ ${COFFER_DEPS:-} == tests ]]; then
  moto_venv=${COFFER_MOTO_VENV:-/opt/coffer-moto}
  if ! [ -x "$moto_venv/bin/moto_server" ]; then
    echo "installing moto[server] into $moto_venv" >&2
    python3 -m venv "$moto_venv"
    "$moto_venv/bin/pip" install -q 'moto[server]>=5.1,<6' >/dev/null
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null 2>&1 || {
  echo "cargo not found: install a Rust toolchain (1.85 or newer) first" >&2
  exit 1
}
