#!/bin/bash
# The image deploy end to end, on real parts: build the Debian 12 KVM image natively (unless
# boot-assets/images already holds one), then `provd lab up --image debian12-kvm`: a BIOS and
# a UEFI VM with Secure Boot enforced network-boot against provd (the UEFI one through
# Debian's signed shim and GRUB), the installer environment streams the image to their
# disks, checks its SHA-256 and grows it, the deploy document's %post runs inside the new
# system (bridge, libvirt TLS with certificates from the lab's CA, firewall, callbacks), the
# VMs reboot into Debian, and the run succeeds only when provd's pool has reached each one's
# libvirt over TLS (host status `ready`). Then lab/guest-on-hypervisor.sh: `provd vm deploy
# --site lab` starts a small guest on a hypervisor (nested TCG) and the guest's own DHCP
# reaches provd through the hypervisor's bridge. Then lab/datacenter-network.sh: the
# hypervisors' bonded uplinks (LACP against the lab's switch), their names in the lab's
# BIND, a tenant guest on VLAN 100 that provd never sees, a migration over VLAN 20, a pulled
# bond member. Everything the lab made is removed afterwards, unless --keep (then `provd lab
# down` removes it).
#   sudo lab/real-hypervisor.sh [--rebuild] [--keep] [provd lab up options, e.g. --vms 1 --firmware bios]
# Times of each step are printed; BENCHMARKS.md ("Image deploy") has measured ones.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, network namespaces, taps): sudo $0"; exit 1; }
rebuild=""
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=1 ;;
    --keep) keep=1 ;;
    *) break ;;
  esac
  shift
done
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
# The image profile's installer: Debian's generic kernel with server drivers.
lab/build-installer.sh --hardware >/dev/null
$PROVD lab down >/dev/null 2>&1 || true
status=0
# The UEFI hypervisor enforces Secure Boot (OVMF's Secure Boot build with Microsoft's keys):
# shim, signed GRUB, signed kernel, from the network and then from its disk.
# With --hardware, lab-1 has e1000e NICs and a SATA disk on AHCI, lab-2 an NVMe disk: the
# hardware installer finds their drivers itself.
firmware=(--firmware bios,secureboot)
case " $* " in *" --firmware "*) firmware=() ;; esac
$PROVD lab up --no-install --image debian12-kvm --hardware "${firmware[@]}" "$@" || status=$?
ready=$(date +%s)
guest=skipped
network=skipped
if [ $status = 0 ]; then
  if PROVD=$PROVD lab/guest-on-hypervisor.sh; then guest=ok; else status=$?; guest=FAILED; fi
fi
guested=$(date +%s)
if [ $status = 0 ]; then
  if PROVD=$PROVD lab/datacenter-network.sh; then network=ok; else status=$?; network=FAILED; fi
fi
[ -n "$keep" ] || $PROVD lab down >/dev/null 2>&1 || true
echo "real-hypervisor: image $(( built - start ))s, lab $(( ready - built ))s, guest $guest $(( guested - ready ))s, network $network $(( $(date +%s) - guested ))s, exit $status"
exit $status
