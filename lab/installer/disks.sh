#!/bin/sh
# The installer's disks (sourced by lab/installer/init): which disks a machine has, what
# each is (size, serial, udev's by-path name, computed from sysfs: there is no udev in the
# installer), and the one a profile's rule picks (provd's canonical form of `disk = "..."`,
# src/config/disk_rule.rs). tests/installer_disks.rs runs these functions against sysfs
# trees it makes. SYS: where sysfs is (/sys; a test's tree).
SYS=${SYS:-/sys}
DEV=${DEV:-/dev}

# The disks an install may write: whole disks, not loop, RAM, optical, zram, device-mapper,
# md, nbd or floppy devices, nor removable media.
disks() {
  for d in $SYS/block/*; do
    n=${d##*/}
    case "$n" in loop*|ram*|sr*|zram*|dm-*|md*|nbd*|fd*) continue ;; esac
    [ "$(cat "$d/removable" 2>/dev/null)" = 1 ] && continue
    [ "$(cat "$d/size")" -gt 0 ] 2>/dev/null || continue
    echo "$n"
  done
}
disk_bytes() { echo $(( $(cat "$SYS/block/$1/size") * 512 )); }
# A disk's serial: virtio and NVMe say it in sysfs; SATA and SAS disks (behind the SCSI
# layer) in their VPD page 0x80, after its 4-byte header.
disk_serial() {
  for f in "$SYS/block/$1/serial" "$SYS/block/$1/device/serial"; do
    [ -s "$f" ] && { tr -d ' \n' < "$f"; return; }
  done
  [ -r "$SYS/block/$1/device/vpd_pg80" ] && tail -c +5 "$SYS/block/$1/device/vpd_pg80" | tr -d ' \000\n'
}
# udev's /dev/disk/by-path name of a disk (there is no udev here): its controller's PCI
# address, then nvme-<namespace> or ata-<port>.0, or nothing more for virtio.
disk_by_path() {
  p=$(readlink -f "$SYS/block/$1")
  pci=$(echo "$p" | tr '/' '\n' | grep -E '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$' | tail -n 1)
  [ -n "$pci" ] || return 0
  case "$1" in
    nvme*) echo "pci-$pci-nvme-$(cat "$SYS/block/$1/nsid" 2>/dev/null || echo 1)" ;;
    sd*)
      port=$(echo "$p" | tr '/' '\n' | sed -n 's/^ata\([0-9][0-9]*\)$/\1/p' | head -n 1)
      if [ -n "$port" ]; then echo "pci-$pci-ata-$port.0"
      else echo "pci-$pci-scsi-$(echo "$p" | tr '/' '\n' | grep -E '^[0-9]+:[0-9]+:[0-9]+:[0-9]+$' | tail -n 1)"; fi ;;
    *) echo "pci-$pci" ;;
  esac
}
# The disk the profile's rule picks (provd's canonical form, config::disk_rule): smallest,
# largest, path:/dev/disk/by-path/NAME or path:/dev/NAME, serial:S, size:MIN-MAX (bytes;
# the first disk in the kernel's order within the range).
pick_disk() {
  rule=$1 best="" bestb=""
  case "$rule" in
    smallest|largest)
      for d in $(disks); do
        b=$(disk_bytes "$d")
        if [ -z "$best" ] || { [ "$rule" = smallest ] && [ "$b" -lt "$bestb" ]; } ||
          { [ "$rule" = largest ] && [ "$b" -gt "$bestb" ]; }; then best=$d bestb=$b; fi
      done
      echo "$best" ;;
    path:/dev/disk/by-path/*)
      for d in $(disks); do [ "$(disk_by_path "$d")" = "${rule#path:/dev/disk/by-path/}" ] && { echo "$d"; return; }; done ;;
    path:/dev/*)
      n=${rule#path:/dev/}
      for d in $(disks); do [ "$d" = "$n" ] && echo "$d"; done ;;
    serial:*)
      for d in $(disks); do [ "$(disk_serial "$d")" = "${rule#serial:}" ] && { echo "$d"; return; }; done ;;
    size:*)
      r=${rule#size:} min=${r%-*} max=${r#*-}
      for d in $(disks); do
        b=$(disk_bytes "$d")
        [ "$b" -ge "$min" ] && { [ -z "$max" ] || [ "$b" -le "$max" ]; } && { echo "$d"; return; }
      done ;;
  esac
  return 0
}
describe_disks() {
  for d in $(disks); do echo -n "$d ($(( $(disk_bytes "$d") / 1000000 )) MB, serial $(disk_serial "$d"), $(disk_by_path "$d")) "; done
}
# Partition N of a disk: NVMe and MMC names end in a digit and take a "p" (nvme0n1p3).
part_dev() { case "$1" in *[0-9]) echo "${1}p$2" ;; *) echo "$1$2" ;; esac; }

# Whether the disk or one of its partitions holds a file system (busybox blkid reports file
# systems only: a bare partition table, or a disk whose start was cleared, holds none).
holds_filesystem() {
  blkid "$DEV/$1" $(ls -d "$DEV/$1"?* 2>/dev/null) 2>/dev/null | grep -q ' TYPE='
}
