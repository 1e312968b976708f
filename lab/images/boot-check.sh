#!/bin/bash
# Boot a built image (lab/images/debian12-kvm.sh) under QEMU (TCG, as everything here) and
# wait for its first-boot unit to report libvirtd on the serial console. BIOS (SeaBIOS) and
# UEFI (OVMF), each from a fresh copy of the image, with user-mode networking only (the
# guest's DHCP is QEMU's own, inside QEMU: nothing leaves this machine).
#
#   sudo lab/images/boot-check.sh [IMAGE.raw.gz] [bios|uefi|both]
#
# Prints the seconds from power-on to the report and exits non-zero if a firmware did not
# get there within 10 minutes; the serial logs stay in /tmp/provd-boot-check.
set -euo pipefail
IMG=${1:-boot-assets/images/debian12-kvm.raw.gz}
WHICH=${2:-both}
W=/tmp/provd-boot-check
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
for t in qemu-system-x86_64 gunzip sha256sum; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
[ -f "$IMG" ] || { echo "no image $IMG (build it: lab/images/debian12-kvm.sh)"; exit 1; }
if [ -f "$IMG.sha256" ]; then
  (cd "$(dirname "$IMG")" && sha256sum --quiet -c "$(basename "$IMG").sha256") || { echo "checksum mismatch: $IMG"; exit 1; }
fi
rm -rf $W; mkdir -p $W
QEMU_PID=
trap '[ -n "$QEMU_PID" ] && kill $QEMU_PID 2>/dev/null; true' EXIT

boot() {  # $1 = bios | uefi
  local fw=() disk=$W/$1.raw log=$W/$1-serial.log
  gunzip -c "$IMG" > "$disk"
  if [ "$1" = uefi ]; then
    cp $OVMF_VARS $W/vars.fd
    fw=(-drive if=pflash,format=raw,readonly=on,file=$OVMF_CODE -drive if=pflash,format=raw,file=$W/vars.fd)
  fi
  local t0=$(date +%s)
  qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 2048 -smp 2 "${fw[@]}" \
    -drive file="$disk",format=raw,if=virtio -nic user,model=virtio-net-pci \
    -display none -serial file:"$log" -monitor none & QEMU_PID=$!
  local found=
  for _ in $(seq 600); do
    if grep -a -q "provd-image: libvirtd" "$log" 2>/dev/null; then found=1; break; fi
    kill -0 $QEMU_PID 2>/dev/null || break
    sleep 1
  done
  kill $QEMU_PID 2>/dev/null; wait $QEMU_PID 2>/dev/null || true; QEMU_PID=
  rm -f "$disk"
  if [ -z "$found" ]; then echo "$1: no report from the first-boot unit (serial log: $log)"; return 1; fi
  local said; said=$(grep -a -o "provd-image: libvirtd [a-z-]*" "$log" | head -1)
  echo "$1: \"$said\" after $(( $(date +%s) - t0 )) s"
  [ "$said" = "provd-image: libvirtd active" ]
}

status=0
case $WHICH in
  bios|uefi) boot $WHICH || status=1 ;;
  both) boot bios || status=1; boot uefi || status=1 ;;
  *) echo "bios, uefi or both"; exit 1 ;;
esac
exit $status
