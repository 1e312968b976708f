#!/bin/bash
# The image deploy end to end, on real parts: build the Debian 12 KVM image natively (unless
# boot-assets/images already holds one), then `provd lab up --image debian12-kvm`: a BIOS and
# a UEFI VM network-boot against provd, the installer environment streams the image to their
# disks, checks its SHA-256 and grows it, the deploy document's %post runs inside the new
# system (bridge, libvirt TLS with certificates from the lab's CA, firewall, callbacks), the
# VMs reboot into Debian, and the run succeeds only when provd's pool has reached each one's
# libvirt over TLS (host status `ready`). Everything the lab made is removed afterwards.
#   sudo lab/real-hypervisor.sh [--rebuild] [provd lab up options, e.g. --vms 1 --firmware bios]
# Times of each step are printed; BENCHMARKS.md ("Image deploy") has measured ones.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, network namespaces, taps): sudo $0"; exit 1; }
rebuild=""
if [ "${1:-}" = "--rebuild" ]; then rebuild=1; shift; fi
lab/deps.sh
IMAGES=boot-assets/images
start=$(date +%s)
if [ -n "$rebuild" ] || [ ! -s "$IMAGES/debian12-kvm.raw.gz.sha256" ]; then
  lab/images/debian12-kvm.sh "$IMAGES"
fi
built=$(date +%s)
# The debug build (what `lab/test.sh` has just built): the run's time is QEMU under TCG.
cargo build -q
PROVD=$PWD/target/debug/provd
# The installer environment (kernel + busybox initramfs with dd, sfdisk, resize2fs).
lab/build-installer.sh >/dev/null
$PROVD lab down >/dev/null 2>&1 || true
status=0
$PROVD lab up --down --no-install --image debian12-kvm "$@" || status=$?
$PROVD lab down >/dev/null 2>&1 || true
echo "real-hypervisor: image $(( built - start ))s, lab $(( $(date +%s) - built ))s, exit $status"
exit $status
