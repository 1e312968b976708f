#!/bin/bash
# Build the lab's mini-installer: boot-assets/lab/vmlinuz (Debian's cloud kernel) and
# boot-assets/lab/installer.cpio.gz (busybox-static, the virtio modules that kernel needs,
# lab/installer/init, its udhcpc script and shims, and a boot sector to "install"); and the
# lab's switch, boot-assets/lab/switch.cpio.gz for the same kernel (busybox, the bonding,
# 802.1Q and bridge modules, iproute2's ip and bridge, lab/switch/init).
# Needs: busybox-static, linux-image-cloud-amd64, qemu-guest-agent (lab/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-boot-assets/lab}
KVER=$(ls /lib/modules | grep -- '-cloud-amd64$' | sort -V | tail -n 1 || true)
[ -n "$KVER" ] && [ -f "/boot/vmlinuz-$KVER" ] || { echo "no cloud kernel: apt-get install linux-image-cloud-amd64"; exit 1; }
[ -x /bin/busybox ] || { echo "no /bin/busybox: apt-get install busybox-static"; exit 1; }

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,dev,proc,sys,tmp,run,etc,lib/modules,shims}
cp /bin/busybox "$W/bin/busybox"
# The NIC and disk drivers with everything they depend on, dependencies first (the
# order comes from modinfo, not from a list that a kernel update could make wrong).
add_module() {
  local m=$1 dep
  grep -qx "$m.ko" "$W/modules.order" 2>/dev/null && return
  for dep in $(modinfo -k "$KVER" -F depends "$m" | tr ',' ' '); do add_module "$dep"; done
  cp "$(modinfo -k "$KVER" -F filename "$m")" "$W/lib/modules/$m.ko"
  echo "$m.ko" >> "$W/modules.order"
}
# button and evdev: the ACPI power button as an input device the init can wait on.
# efivarfs: the init reads the firmware's SecureBoot variable. Under Secure Boot the kernel
# is locked down and loads only signed modules: these are Debian's, signed, copied as is.
for m in virtio_pci virtio_net virtio_blk virtio_console button evdev efivarfs; do add_module "$m"; done
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
# e2fsck asks whether the file system is mounted.
ln -s /proc/mounts "$W/etc/mtab"
# openssl reads its configuration at start; curl needs nothing else for plain HTTP.
install -D /usr/lib/ssl/openssl.cnf "$W/usr/lib/ssl/openssl.cnf"
# %post sets owners by name (chown root:root).
echo 'root:x:0:0:root:/:/bin/sh' > "$W/etc/passwd"
echo 'root:x:0:' > "$W/etc/group"
cp lab/installer/init lab/installer/udhcpc.script lab/installer/nocloud-guest lab/installer/discover "$W/"
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
cp "/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "built $OUT/installer.cpio.gz ($(stat -c %s "$OUT/installer.cpio.gz") bytes) and $OUT/vmlinuz ($KVER)"

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
