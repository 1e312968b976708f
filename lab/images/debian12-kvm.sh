#!/bin/bash
# Build a Debian 12 KVM hypervisor disk image natively (no VM, no TCG): debootstrap from
# the Debian mirror this machine's apt uses, into a partitioned raw disk on a loop device,
# with the kernel, GRUB for BIOS and UEFI, QEMU, libvirt, OpenSSH and bridge support.
# (Issue 23's first piece: the image an installer environment will stream to a disk.)
#
#   sudo lab/images/debian12-kvm.sh [OUT_DIR] [SIZE]
#   e.g. sudo lab/images/debian12-kvm.sh boot-assets/images 4G
#
# Writes OUT_DIR/debian12-kvm.raw.gz (the raw disk, gzip: a busybox installer can stream
# it with `wget -O- | gunzip | dd`) and OUT_DIR/debian12-kvm.raw.gz.sha256, and prints
# the time of each step. Debian packages are cached in /var/cache/provd-images/apt, so a
# rebuild downloads nothing new.
#
# The image is generic: no host name, no machine id, no SSH host keys (made at first
# boot), root locked. systemd-networkd asks DHCP on every Ethernet port. A first-boot
# unit, provd-firstboot.service, says on the serial console whether libvirtd is active
# (`provd-image: libvirtd active`); the per-host build-out (bridge, libvirt TLS
# certificates, callbacks) is the part still to come (issue 23).
#
# Needs root, debootstrap, sfdisk, losetup, mkfs.ext4, mkfs.vfat. Everything it mounts or
# attaches is released on exit, failed or not.
set -euo pipefail
OUT=${1:-boot-assets/images}
SIZE=${2:-4G}
NAME=debian12-kvm
CACHE=/var/cache/provd-images/apt
[ "$(id -u)" = 0 ] || { echo "run as root (loop devices, mounts, chroot)"; exit 1; }
for t in debootstrap sfdisk losetup mkfs.ext4 mkfs.vfat gzip sha256sum; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install debootstrap fdisk dosfstools)"; exit 1; }
done
# The mirror this machine's apt uses (deb822 or one-line sources), never an address of ours.
MIRROR=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
  | grep -v security | head -1 | awk '{print $2}')
[ -n "$MIRROR" ] || { echo "no Debian mirror in this machine's apt sources"; exit 1; }

mkdir -p "$OUT" "$CACHE"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/provd-image.XXXXXX)
RAW=$WORK/$NAME.raw
ROOT=$WORK/root
LOOP=
cleanup() {
  set +e
  for m in dev/pts dev proc sys boot/efi var/cache/apt/archives ""; do
    mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
  done
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  rm -rf "$WORK"
}
trap cleanup EXIT

T0=$(date +%s)
step() { echo "[$(( $(date +%s) - T0 ))s] $*"; }

step "disk: $SIZE raw, GPT: BIOS boot 1 MiB, EFI system 127 MiB, root ext4"
truncate -s "$SIZE" "$RAW"
sfdisk -q "$RAW" <<'EOF'
label: gpt
size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios
size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root
EOF
LOOP=$(losetup -f --show -P "$RAW")
mkfs.vfat -F 32 -n ESP "${LOOP}p2" >/dev/null
mkfs.ext4 -q -L root "${LOOP}p3"
mkdir -p "$ROOT"
mount "${LOOP}p3" "$ROOT"
mkdir -p "$ROOT/boot/efi" "$ROOT/var/cache/apt/archives"
mount "${LOOP}p2" "$ROOT/boot/efi"
mount --bind "$CACHE" "$ROOT/var/cache/apt/archives"

step "debootstrap bookworm from $MIRROR"
# The default variant (Debian's "important" set: systemd as init, udev, login), plus:
PACKAGES=linux-image-amd64,grub-pc,grub-efi-amd64-bin,qemu-system-x86,qemu-utils,libvirt-daemon-system,libvirt-clients,openssh-server,bridge-utils,iproute2,curl,ca-certificates,systemd-resolved
# ifupdown would race systemd-networkd for the ports.
debootstrap --exclude=ifupdown --include="$PACKAGES" bookworm "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
  || { tail -30 "$WORK/debootstrap.log"; exit 1; }

step "configure: fstab, network, console, first-boot unit"
ROOT_UUID=$(blkid -s UUID -o value "${LOOP}p3")
ESP_UUID=$(blkid -s UUID -o value "${LOOP}p2")
cat > "$ROOT/etc/fstab" <<EOF
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
UUID=$ESP_UUID /boot/efi vfat umask=0077 0 2
EOF
echo debian > "$ROOT/etc/hostname"
cat > "$ROOT/etc/systemd/network/50-dhcp.network" <<'EOF'
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=ipv4
EOF
cat > "$ROOT/etc/systemd/system/provd-firstboot.service" <<'EOF'
[Unit]
Description=provd: report on the console that the hypervisor is up
After=libvirtd.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "provd-image: libvirtd $(systemctl is-active libvirtd)" > /dev/ttyS0'

[Install]
WantedBy=multi-user.target
EOF
# SSH host keys are made at first boot, per machine, not baked into every copy.
cat > "$ROOT/etc/systemd/system/provd-ssh-keys.service" <<'EOF'
[Unit]
Description=provd: make this machine's SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
sed -i 's/^GRUB_CMDLINE_LINUX_DEFAULT=.*/GRUB_CMDLINE_LINUX_DEFAULT="console=ttyS0,115200 console=tty0"/; s/^GRUB_TIMEOUT=.*/GRUB_TIMEOUT=1/' "$ROOT/etc/default/grub"
echo 'GRUB_TERMINAL="serial console"' >> "$ROOT/etc/default/grub"

for m in dev dev/pts proc sys; do mount --bind /$m "$ROOT/$m"; done
chroot "$ROOT" /bin/sh -e <<EOF > "$WORK/chroot.log" 2>&1 || { tail -30 "$WORK/chroot.log"; exit 1; }
export DEBIAN_FRONTEND=noninteractive
systemctl enable systemd-networkd systemd-resolved provd-firstboot provd-ssh-keys libvirtd
passwd -l root
rm -f /etc/ssh/ssh_host_*
grub-install --target=i386-pc $LOOP
grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram
update-grub
EOF
# update-grub names the loop device's partition; the disk the image lands on is found by UUID.
sed -i "s#root=${LOOP}p3#root=UUID=$ROOT_UUID#g" "$ROOT/boot/grub/grub.cfg"
grep -q "root=UUID=$ROOT_UUID" "$ROOT/boot/grub/grub.cfg" || { echo "grub.cfg does not name the root by UUID"; exit 1; }
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
for m in dev/pts dev proc sys; do umount "$ROOT/$m"; done
umount "$ROOT/var/cache/apt/archives" "$ROOT/boot/efi"
USED=$(df -h --output=used "$ROOT" | tail -1 | tr -d ' ')
umount "$ROOT"
losetup -d "$LOOP"; LOOP=

step "compress ($USED used on the root filesystem)"
gzip -1 -c "$RAW" > "$OUT/$NAME.raw.gz.part"
mv "$OUT/$NAME.raw.gz.part" "$OUT/$NAME.raw.gz"
(cd "$OUT" && sha256sum "$NAME.raw.gz" > "$NAME.raw.gz.sha256")
step "done: $OUT/$NAME.raw.gz ($(du -h "$OUT/$NAME.raw.gz" | cut -f1)), $(cut -c1-16 "$OUT/$NAME.raw.gz.sha256")..."
