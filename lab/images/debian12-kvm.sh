#!/bin/bash
# Build a Debian 12 KVM hypervisor disk image natively (no VM, no TCG): debootstrap from
# the Debian mirror this machine's apt uses, into a GPT raw disk through loop devices, with
# the kernel, EXTLINUX (BIOS) and, for UEFI, Debian's signed shim and GRUB (so the image
# boots with Secure Boot enforced, as with it off), QEMU, libvirt, OpenSSH and bridge support. (Issue 23's first piece: the image an installer environment will stream
# to a disk.)
#
#   sudo lab/images/debian12-kvm.sh [OUT_DIR] [SIZE]
#   e.g. sudo lab/images/debian12-kvm.sh boot-assets/images 2G
#
# SIZE is the image's disk (default 2G: the root holds about 1.1G); the installer grows the
# root partition to the target disk, so a small image streams faster and fits any disk.
#
# Writes OUT_DIR/debian12-kvm.raw.gz (the raw disk, gzip: a busybox installer can stream
# it with `wget -O- | gunzip | dd`) and OUT_DIR/debian12-kvm.raw.gz.sha256, and prints
# the time of each step. Debian packages are cached in /var/cache/provd-images/apt, so a
# rebuild downloads nothing new.
#
# The image is generic: no machine id, no SSH host keys (made at first boot), root locked.
# systemd-networkd asks DHCP on every Ethernet port. A first-boot unit,
# provd-firstboot.service, says on the serial console whether libvirtd is active
# (`provd-image: libvirtd active`). The per-host build-out (bridge, libvirt TLS
# certificates, firewall, callbacks) is the deploy document's %post, which provd's installer
# environment runs inside the written image (templates/kickstart/debian12-image.ks.j2).
# The root file system is the last partition: the installer grows it to the disk.
#
# Needs root, debootstrap, sfdisk, losetup, blkid, mkfs.ext4, mkfs.vfat, mtools. Everything it
# mounts or attaches is released on exit, failed or not; nothing outside its own work
# directory is mounted.
set -euo pipefail
OUT=${1:-boot-assets/images}
SIZE=${2:-2G}
NAME=debian12-kvm
CACHE=/var/cache/provd-images/apt
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices, mounts, chroot)"; exit 1; }
for t in debootstrap sfdisk losetup blkid mkfs.ext4 mkfs.vfat mcopy gzip sha256sum; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install debootstrap fdisk dosfstools mtools)"; exit 1; }
done
# The mirror this machine's apt uses (deb822 or one-line sources), never an address of ours.
MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null \
  | grep -E '^(URIs:|deb )' | grep -v security | head -1 | awk '{print $2}' || true)
[ -n "$MIRROR" ] || { echo "no Debian mirror in this machine's apt sources"; exit 1; }

mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/provd-image.XXXXXX)
RAW=$WORK/$NAME.raw
ROOT=$WORK/root
LOOPS=()
cleanup() {
  set +e
  # Innermost first; only mounts under this run's own root.
  for m in dev/pts dev proc sys boot/efi var/cache/apt/archives; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
  done
  mountpoint -q "$ROOT" 2>/dev/null && umount -l "$ROOT"
  for l in "${LOOPS[@]}"; do losetup -d "$l"; done
  rm -rf "$WORK"
}
trap cleanup EXIT

T0=$(date +%s)
step() { echo "[$(($(date +%s) - T0))s] $*"; }

step "disk: $SIZE raw, GPT: BIOS boot 1 MiB, EFI system 127 MiB, root ext4"
truncate -s "$SIZE" "$RAW"
printf '%s\n' 'label: gpt' \
  'size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios' \
  'size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp' \
  'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root' | sfdisk -q "$RAW"

# One loop device per partition, at its offset: these machines have no udev to make the
# partition nodes of `losetup -P`.
part_loop() { # $1 = partition number
  local start size
  read -r start size < <(sfdisk -J "$RAW" | python3 -c '
import json, sys
p = json.load(sys.stdin)["partitiontable"]["partitions"][int(sys.argv[1]) - 1]
print(p["start"], p["size"])' "$1")
  losetup -f --show --offset $((start * 512)) --sizelimit $((size * 512)) "$RAW"
}
ESP_LOOP=$(part_loop 2)
LOOPS+=("$ESP_LOOP")
ROOT_LOOP=$(part_loop 3)
LOOPS+=("$ROOT_LOOP")
mkfs.vfat -F 32 -n ESP "$ESP_LOOP" >/dev/null
mkfs.ext4 -q -L root "$ROOT_LOOP"
mkdir -p "$ROOT"
mount "$ROOT_LOOP" "$ROOT"
# The ESP is written with mtools, not mounted: not every kernel that builds has vfat.
mkdir -p "$ROOT/boot/efi" "$ROOT/var/cache/apt/archives"
mount --bind "$CACHE" "$ROOT/var/cache/apt/archives"

step "debootstrap bookworm from $MIRROR"
# The default variant (Debian's "important" set: systemd as init, udev, login); then apt,
# in the new root, installs the rest (debootstrap's own resolver stops at virtual packages
# such as logind or the D-Bus system bus that libvirt needs). ifupdown would race
# systemd-networkd for the ports.
debootstrap --exclude=ifupdown bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  cp "$ROOT/debootstrap/debootstrap.log" /tmp/provd-image-debootstrap.log 2>/dev/null
  tail -30 "$WORK/debootstrap.log"; echo "dpkg's log: /tmp/provd-image-debootstrap.log"; exit 1
}
PACKAGES="linux-image-amd64 extlinux syslinux-common mokutil qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-clients openssh-server bridge-utils iproute2 curl ca-certificates
  systemd-resolved openssl nftables"
step "apt-get install: $(echo $PACKAGES)"
for m in dev dev/pts proc sys; do mount --bind "/$m" "$ROOT/$m"; done
chroot "$ROOT" /bin/sh -ec "export DEBIAN_FRONTEND=noninteractive; apt-get update -q;
  apt-get install -y -q --no-install-recommends $(echo $PACKAGES)" >"$WORK/apt.log" 2>&1 ||
  { tail -30 "$WORK/apt.log"; exit 1; }
for m in dev/pts dev proc sys; do umount "$ROOT/$m"; done

step "configure: fstab, network, first-boot units, boot loaders"
ROOT_UUID=$(blkid -s UUID -o value "$ROOT_LOOP")
ESP_UUID=$(blkid -s UUID -o value "$ESP_LOOP")
printf '%s\n' "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" \
  "UUID=$ESP_UUID /boot/efi vfat umask=0077,nofail 0 2" >"$ROOT/etc/fstab"
echo debian >"$ROOT/etc/hostname"
printf '%s\n' '[Match]' 'Type=ether' 'Name=en* eth*' '' '[Network]' 'DHCP=ipv4' \
  >"$ROOT/etc/systemd/network/50-dhcp.network"
# The console report: Secure Boot's state as mokutil reads it (UEFI only), then libvirtd.
printf '%s\n' '#!/bin/sh' \
  '[ -d /sys/firmware/efi ] && echo "provd-image: $(mokutil --sb-state 2>&1 | head -n 1)" > /dev/ttyS0' \
  'echo "provd-image: libvirtd $(systemctl is-active libvirtd)" > /dev/ttyS0' \
  >"$ROOT/usr/local/sbin/provd-firstboot"
chmod 0755 "$ROOT/usr/local/sbin/provd-firstboot"
printf '%s\n' '[Unit]' \
  'Description=provd: report on the console that the hypervisor is up' \
  'After=libvirtd.service network-online.target' 'Wants=network-online.target' '' \
  '[Service]' 'Type=oneshot' 'ExecStart=/usr/local/sbin/provd-firstboot' '' \
  '[Install]' 'WantedBy=multi-user.target' >"$ROOT/etc/systemd/system/provd-firstboot.service"
# SSH host keys are made at first boot, per machine, not baked into every copy.
printf '%s\n' '[Unit]' "Description=provd: make this machine's SSH host keys" 'Before=ssh.service' \
  'ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key' '' \
  '[Service]' 'Type=oneshot' 'ExecStart=/usr/bin/ssh-keygen -A' '' \
  '[Install]' 'WantedBy=multi-user.target' >"$ROOT/etc/systemd/system/provd-ssh-keys.service"

# Boot loaders written without probing devices (grub-install cannot map an offset loop
# device to a disk): EXTLINUX for BIOS (GPT MBR code, the root partition marked legacy
# bootable); for UEFI, at the removable-media path, Debian's shim (signed by Microsoft's UEFI
# CA) and Debian's signed GRUB beside it (lab/signed-chain.sh fetches both from the archive),
# so the image boots whether the firmware enforces Secure Boot or not: shim checks GRUB,
# GRUB has shim check the kernel (Debian's, signed), and the kernel loads only signed
# modules. That GRUB's built-in prefix is /EFI/debian: its grub.cfg there finds the root
# file system. Both loaders boot the /vmlinuz and /initrd.img links Debian keeps pointing at
# the newest kernel. No fbx64.efi: shim would then rewrite the boot entries first.
[ -e "$ROOT/vmlinuz" ] && [ -e "$ROOT/initrd.img" ] || { echo "no /vmlinuz and /initrd.img links in the image"; exit 1; }
CMDLINE="root=UUID=$ROOT_UUID ro console=tty0 console=ttyS0,115200"
mkdir -p "$ROOT/boot/extlinux" "$ROOT/boot/grub"
printf '%s\n' 'SERIAL 0 115200' 'DEFAULT debian' 'TIMEOUT 10' 'LABEL debian' \
  '  LINUX ../../vmlinuz' '  INITRD ../../initrd.img' "  APPEND $CMDLINE" >"$ROOT/boot/extlinux/extlinux.conf"
printf '%s\n' 'serial --unit=0 --speed=115200' 'terminal_input serial console' \
  'terminal_output serial console' 'set timeout=1' 'menuentry "Debian 12 KVM hypervisor" {' \
  "  linux /vmlinuz $CMDLINE" '  initrd /initrd.img' '}' >"$ROOT/boot/grub/grub.cfg"
printf '%s\n' "search --no-floppy --fs-uuid --set=root $ROOT_UUID" \
  'set prefix=($root)/boot/grub' 'configfile ($root)/boot/grub/grub.cfg' >"$WORK/esp-grub.cfg"
SIGNED=$("$(dirname "$0")/../signed-chain.sh" | sed -n 's/.*unpacked under //p')/usr/lib
[ -s "$SIGNED/shim/shimx64.efi.signed" ] || { echo "no signed shim (lab/signed-chain.sh)"; exit 1; }

for m in dev dev/pts proc sys; do mount --bind "/$m" "$ROOT/$m"; done
chroot "$ROOT" /bin/sh -es >"$WORK/chroot.log" 2>&1 <<'CHROOT' || { tail -30 "$WORK/chroot.log"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
systemctl enable systemd-networkd systemd-resolved provd-firstboot provd-ssh-keys libvirtd
passwd -l root
rm -f /etc/ssh/ssh_host_*
extlinux --install /boot/extlinux
CHROOT
for m in dev/pts dev proc sys; do umount "$ROOT/$m"; done
mmd -i "$ESP_LOOP" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$ESP_LOOP" "$SIGNED/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$ESP_LOOP" "$SIGNED/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
mcopy -i "$ESP_LOOP" "$WORK/esp-grub.cfg" ::/EFI/debian/grub.cfg
dd if="$ROOT/usr/lib/syslinux/mbr/gptmbr.bin" of="$RAW" bs=440 count=1 conv=notrunc status=none
sfdisk -q --part-attrs "$RAW" 3 LegacyBIOSBootable
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
umount "$ROOT/var/cache/apt/archives"
USED=$(df -h --output=used "$ROOT" | tail -1 | tr -d ' ')
umount "$ROOT"
for l in "${LOOPS[@]}"; do losetup -d "$l"; done
LOOPS=()

step "compress ($USED used on the root filesystem)"
gzip -1 -c "$RAW" >"$OUT/$NAME.raw.gz.part"
mv "$OUT/$NAME.raw.gz.part" "$OUT/$NAME.raw.gz"
(cd "$OUT" && sha256sum "$NAME.raw.gz" >"$NAME.raw.gz.sha256")
step "done: $OUT/$NAME.raw.gz ($(du -h "$OUT/$NAME.raw.gz" | cut -f1)), sha256 $(cut -c1-16 "$OUT/$NAME.raw.gz.sha256")..."
