#!/usr/bin/env bash
# Builds what a fleet installs:
#   target/release/coffer                      one stripped binary; OpenSSL linked in
#                                              (feature static-openssl), so it needs only glibc
#   target/debian/coffer_<version>_<arch>.deb  that binary as /usr/bin/coffer, a man page per
#                                              command, bash/zsh/fish completions, the systemd
#                                              units coffer-backup@.service/.timer and a
#                                              commented /etc/coffer/config.toml
# Man pages and completions come from the binary itself (clap_mangen, clap_complete), so
# they always match its flags. Prints the .deb's path on standard output.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
for tool in dpkg-deb objdump gzip; do
    command -v "$tool" >/dev/null || {
        echo "package.sh: $tool is missing (apt-get install dpkg-dev binutils gzip)" >&2
        exit 1
    }
done

cargo build --release --locked --features static-openssl >&2
bin=target/release/coffer
if ldd "$bin" | grep -q 'libssl\|libcrypto'; then
    echo "package.sh: $bin still links the system's OpenSSL" >&2
    exit 1
fi
version=$("$bin" --version | awk '{ print $2 }')
arch=$(dpkg --print-architecture)
# The newest glibc symbol version the binary asks for is the oldest glibc it runs on.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)

root=target/debian/root
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/lib/systemd/system" \
    "$root/etc/coffer" "$root/usr/share/doc/coffer"
install -m 0755 "$bin" "$root/usr/bin/coffer"
"$bin" generate-man "$root/usr/share/man/man1"
gzip -9n "$root"/usr/share/man/man1/*.1
"$bin" completions bash >"$root/usr/share/bash-completion/completions/coffer"
"$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_coffer"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/coffer.fish"
install -m 0644 scripts/package/coffer-backup@.service scripts/package/coffer-backup@.timer \
    "$root/lib/systemd/system/"
install -m 0644 scripts/package/config.toml "$root/etc/coffer/config.toml"
echo /etc/coffer/config.toml >"$root/DEBIAN/conffiles"
cp README.md docs/RECOVERY.md "$root/usr/share/doc/coffer/"
gzip -9n "$root/usr/share/doc/coffer/README.md" "$root/usr/share/doc/coffer/RECOVERY.md"
cat >"$root/usr/share/doc/coffer/copyright" <<TEXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: coffer

Files: *
License: MIT or Apache-2.0

Files: usr/bin/coffer (statically linked OpenSSL)
License: Apache-2.0
TEXT
chmod -R u=rwX,go=rX "$root"

cat >"$root/DEBIAN/control" <<TEXT
Package: coffer
Version: $version
Architecture: $arch
Maintainer: coffer developers <coffer@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6 (>= $glibc), libgcc-s1
Recommends: fuse3
Suggests: gnupg, zstd, python3
Section: admin
Priority: optional
Description: encrypted, deduplicated, versioned backups to object storage
 Backs up directories, command output and S3 buckets into S3-compatible object
 storage or a local directory. Backup hosts hold only a public OpenPGP
 certificate and S3 credentials that may only PutObject: they can write
 backups, never read, change or delete them. On the admin box, every snapshot
 mounts as a read-only directory tree (needs fuse3), fetched and decrypted
 lazily. Every stored blob is a standard OpenPGP message.
TEXT

deb="target/debian/coffer_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
