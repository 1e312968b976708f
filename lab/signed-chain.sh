#!/bin/bash
# Fetch the Secure Boot chain from Debian's archive without installing anything on this
# machine: `apt-get download` shim-signed and grub-efi-amd64-signed, and unpack each with
# `dpkg-deb -x` under CACHE/root (installing them would run their postinst, which installs
# GRUB on this machine's own disk). `provd assets init --signed-chain CACHE/root` (and the
# lab, for its Secure Boot VMs) copies shimx64.efi and grubx64.efi from there into the
# assets directory, refusing a file without a signature.
#   lab/signed-chain.sh [CACHE]     (default /var/cache/provd-lab/signed-chain)
# Idempotent: a cache whose .debs are the archive's current versions is left as it is.
set -euo pipefail
CACHE=${1:-/var/cache/provd-lab/signed-chain}
mkdir -p "$CACHE/debs"
cd "$CACHE/debs"
# apt's sandbox user must be able to write here, or apt warns; root's cache is fine.
chmod 0755 "$CACHE" "$CACHE/debs"
for p in shim-signed grub-efi-amd64-signed; do
  v=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')
  [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "signed-chain: apt knows no $p (is the Debian archive in apt's sources?)"; exit 1; }
  # apt-get download names files with ':' escaped as %3a.
  ls "${p}_${v//:/%3a}_"*.deb >/dev/null 2>&1 || ls "${p}_${v}_"*.deb >/dev/null 2>&1 || {
    rm -f "${p}"_*.deb
    apt-get download -q "$p" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
  }
done
rm -rf "$CACHE/root.new"
mkdir -p "$CACHE/root.new"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$CACHE/root.new"; done
rm -rf "$CACHE/root"
mv "$CACHE/root.new" "$CACHE/root"
[ -s "$CACHE/root/usr/lib/shim/shimx64.efi.signed" ] && [ -s "$CACHE/root/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed" ] ||
  { echo "signed-chain: the packages did not hold shimx64.efi.signed and grubnetx64.efi.signed"; exit 1; }
echo "signed-chain: $(ls ./*.deb | xargs -n1 basename | tr '\n' ' ')unpacked under $CACHE/root"
