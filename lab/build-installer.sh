#!/bin/bash
# Build the lab's mini-installer: boot-assets/lab/vmlinuz (Debian's cloud kernel) and
# boot-assets/lab/installer.cpio.gz (busybox-static, the virtio modules that kernel needs,
# lab/installer/init, its udhcpc script and shims, and a boot sector to "install"); and the
# lab's switch, boot-assets/lab/switch.cpio.gz for the same kernel (busybox, the bonding,
# 802.1Q and bridge modules, iproute2's ip and bridge, lab/switch/init).
#
# --hardware: the installer environment for real servers instead, in OUT/hardware (default
# boot-assets/lab/hardware): Debian's generic kernel (linux-image-amd64's, fetched with
# apt-get download and unpacked with dpkg-deb -x: nothing is installed on this machine),
# with the NIC drivers (e1000e igb ixgbe i40e ice bnxt_en tg3 mlx5_core, and virtio) and
# the storage and RAID-controller drivers (ahci megaraid_sas mpt3sas nvme, and virtio) real
# servers need, each with what it depends on, in a standard module tree with its
# modules.alias; the init loads what the machine's devices ask for (their modalias), as
# udev would. Their firmware: none of these needs a file to come up except some bnxt and
# ice features, whose firmware Debian ships only in non-free packages; none is included.
# No switch is built with --hardware.
#
# Needs: busybox-static, linux-image-cloud-amd64, qemu-guest-agent (lab/deps.sh installs them);
# with --hardware also kmod (modprobe, depmod) and apt's access to the Debian archive.
set -euo pipefail
cd "$(dirname "$0")/.."
HARDWARE=""
if [ "${1:-}" = --hardware ]; then HARDWARE=1; shift; fi
OUT=${1:-boot-assets/lab}
[ -x /bin/busybox ] || { echo "no /bin/busybox: apt-get install busybox-static"; exit 1; }
# Where the kernel's modules are: the host's own tree (the cloud kernel is installed), or the
# unpacked generic kernel's (modinfo and depmod take it as their base directory).
KROOT=/
if [ -n "$HARDWARE" ]; then
  OUT=$OUT/hardware
  CACHE=/var/cache/provd-lab/kernel
  PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$PKG" ] || { echo "apt knows no linux-image-amd64 (is the Debian archive in apt's sources?)"; exit 1; }
  KVER=${PKG#linux-image-}
  mkdir -p "$CACHE"
  chmod 0755 "$CACHE"
  if [ ! -f "$CACHE/$KVER/boot/vmlinuz-$KVER" ]; then
    echo "fetching $PKG (Debian's generic kernel, signed) into $CACHE"
    rm -rf "$CACHE"/*
    (cd "$CACHE" && apt-get download -q "$PKG" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
    dpkg-deb -x "$CACHE/${PKG}_"*.deb "$CACHE/$KVER"
    rm -f "$CACHE/${PKG}_"*.deb
    # The package's postinst would run depmod; nothing was installed, so run it here.
    depmod -b "$CACHE/$KVER" "$KVER"
  fi
  KROOT=$CACHE/$KVER
  KERNEL=$KROOT/boot/vmlinuz-$KVER
else
  KVER=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -n 1 || true)
  KERNEL=/boot/vmlinuz-$KVER
  [ -n "$KVER" ] && [ -f "$KERNEL" ] || { echo "no cloud kernel: apt-get install linux-image-cloud-amd64"; exit 1; }
fi

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,dev,proc,sys,tmp,run,etc,lib/modules,shims}
cp /bin/busybox "$W/bin/busybox"
# The NIC and disk drivers with everything they depend on, dependencies first (the
# order comes from modinfo, not from a list that a kernel update could make wrong).
add_module() {
  local m=$1 dep
  grep -qx "$m.ko" "$W/modules.order" 2>/dev/null && return
  for dep in $(modinfo -b "$KROOT" -k "$KVER" -F depends "$m" | tr ',' ' '); do add_module "$dep"; done
  cp "$(modinfo -b "$KROOT" -k "$KVER" -F filename "$m")" "$W/lib/modules/$m.ko"
  echo "$m.ko" >> "$W/modules.order"
}
# The hardware installer's modules: at their paths in a standard tree (kernel/...), which
# depmod indexes in the initramfs, so modprobe resolves a device's modalias to its driver.
add_tree_module() {
  local m=$1 dep file dest
  file=$(modinfo -b "$KROOT" -k "$KVER" -F filename "$m" 2>/dev/null) || { echo "no module $m in $KVER"; exit 1; }
  [ "$file" = "(builtin)" ] && return
  # modinfo names the file under the base directory; the initramfs has it at /lib/modules.
  dest=$W/lib/modules/$KVER/${file#*/lib/modules/$KVER/}
  [ -e "$dest" ] && return
  for dep in $(modinfo -b "$KROOT" -k "$KVER" -F depends "$m" | tr ',' ' '); do add_tree_module "$dep"; done
  install -D -m 0644 "$file" "$dest"
}
# button and evdev: the ACPI power button as an input device the init can wait on.
# efivarfs: the init reads the firmware's SecureBoot variable. Under Secure Boot the kernel
# is locked down and loads only signed modules: these are Debian's, signed, copied as is.
if [ -z "$HARDWARE" ]; then
  for m in virtio_pci virtio_net virtio_blk virtio_console button evdev efivarfs; do add_module "$m"; done
else
  # What a server's NICs, disks and RAID controllers need, plus what the init itself uses
  # (SCSI disks behind AHCI and the RAID HBAs, ext4 for the written image's %post, and the
  # crc32c that ext4 asks for as a soft dependency, which modinfo's "depends" does not name).
  for m in e1000e igb ixgbe i40e ice bnxt_en tg3 mlx5_core virtio_net virtio_pci \
    ahci megaraid_sas mpt3sas nvme virtio_blk virtio_scsi sd_mod \
    virtio_console button evdev efivarfs ext4 crc32c_generic crc32c_intel vfat nls_ascii nls_cp437; do
    add_tree_module "$m"
  done
  cp "$KROOT/lib/modules/$KVER/modules.builtin" "$KROOT/lib/modules/$KVER/modules.builtin.modinfo" \
    "$KROOT/lib/modules/$KVER/modules.order" "$W/lib/modules/$KVER/"
  depmod -b "$W" "$KVER"
fi
# Real bash, openssl and curl, which a hypervisor kickstart's %post needs (its interpreter,
# its key and CSR, its requests to provd): each binary with the shared libraries ldd names,
# at their own paths, as dracut does.
add_binary() {
  local bin=$1 lib
  install -D "$bin" "$W$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ )]*'); do
    [ -e "$W$lib" ] || install -D "$lib" "$W$lib"
  done
}
# install(1) too: Debian's busybox-static does not build that applet. For image profiles:
# coreutils dd (conv=sparse skips an image's zero blocks), sfdisk (moves the GPT backup
# header and grows the last partition), e2fsck and resize2fs (grow the root file system).
for b in /bin/bash /usr/bin/openssl /usr/bin/curl /usr/bin/install /usr/bin/dd \
  /usr/sbin/sfdisk /usr/sbin/e2fsck /usr/sbin/resize2fs; do add_binary "$b"; done
# The QEMU guest agent, as a guest OS runs it: it answers libvirt's quiesce (fsfreeze) for
# live snapshots, and runs a command when a test asks it to (guest-exec).
add_binary /usr/sbin/qemu-ga
# The hardware installer's modprobe: kmod's, which resolves modaliases through modules.alias.
if [ -n "$HARDWARE" ]; then
  add_binary /usr/bin/kmod
  ln -s /usr/bin/kmod "$W/usr/bin/modprobe"
  # Where the kernel itself asks for a module (request_module: crypto, file systems).
  mkdir -p "$W/sbin"
  ln -s /usr/bin/kmod "$W/sbin/modprobe"
fi
# e2fsck asks whether the file system is mounted.
ln -s /proc/mounts "$W/etc/mtab"
# openssl reads its configuration at start; curl needs nothing else for plain HTTP.
install -D /usr/lib/ssl/openssl.cnf "$W/usr/lib/ssl/openssl.cnf"
# %post sets owners by name (chown root:root).
echo 'root:x:0:0:root:/:/bin/sh' > "$W/etc/passwd"
echo 'root:x:0:' > "$W/etc/group"
cp lab/installer/init lab/installer/disks.sh lab/installer/udhcpc.script lab/installer/nocloud-guest lab/installer/discover "$W/"
cp lab/installer/shims/* "$W/shims/"
chmod +x "$W/init" "$W/udhcpc.script" "$W/nocloud-guest" "$W"/shims/*

# The boot sector the installer writes to the VM's disk. Real-mode code at 0x7c00 that
# writes its message to COM1 (polling the UART's transmit-empty bit) and halts, so the lab
# sees on the serial console that the VM booted from its local disk:
#   00 fa          cli
#   01 31 c0       xor ax,ax
#   03 8e d8       mov ds,ax
#   05 be 23 7c    mov si,0x7c23        ; the message at offset 0x23
#   08 fc          cld
#   09 ac          next: lodsb
#   0a 84 c0       test al,al
#   0c 74 12       jz halt              ; -> 0x20
#   0e 88 c4       mov ah,al
#   10 ba fd 03    mov dx,0x3fd         ; line status register
#   13 ec          wait: in al,dx
#   14 a8 20       test al,0x20         ; transmitter holding register empty?
#   16 74 fb       jz wait              ; -> 0x13
#   18 88 e0       mov al,ah
#   1a ba f8 03    mov dx,0x3f8         ; transmit register
#   1d ee          out dx,al
#   1e eb e9       jmp next             ; -> 0x09
#   20 f4          halt: hlt
#   21 eb fd       jmp halt             ; -> 0x20
#   23 "..." 0     the message
{
  printf '\xfa\x31\xc0\x8e\xd8\xbe\x23\x7c\xfc\xac\x84\xc0\x74\x12\x88\xc4\xba\xfd\x03\xec\xa8\x20\x74\xfb\x88\xe0\xba\xf8\x03\xee\xeb\xe9\xf4\xeb\xfd'
  printf '\r\nprovd-lab: booted from local disk (installed by provd)\r\n\0'
} > "$W/bootsector.bin"
truncate -s 510 "$W/bootsector.bin"
printf '\x55\xaa' >> "$W/bootsector.bin"

mkdir -p "$OUT"
(cd "$W" && find . | sort | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT/installer.cpio.gz"
cp "$KERNEL" "$OUT/vmlinuz"
echo "built $OUT/installer.cpio.gz ($(stat -c %s "$OUT/installer.cpio.gz") bytes) and $OUT/vmlinuz ($KVER)"
[ -z "$HARDWARE" ] || exit 0

# The switch (lab/switch/init says what it is): the same helpers, a fresh tree.
rm -rf "$W"/*
mkdir -p "$W"/{bin,dev,proc,sys,tmp,run,etc,var,lib/modules}
cp /bin/busybox "$W/bin/busybox"
for m in virtio_pci virtio_net bonding 8021q bridge; do add_module "$m"; done
add_binary /usr/sbin/ip
add_binary /usr/sbin/bridge
cp lab/switch/init "$W/init"
chmod +x "$W/init"
(cd "$W" && find . | sort | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT/switch.cpio.gz"
echo "built $OUT/switch.cpio.gz ($(stat -c %s "$OUT/switch.cpio.gz") bytes)"
