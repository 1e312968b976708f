#!/bin/bash
# Install what provd's tests, lab and benchmarks need on Debian 12 (idempotent; installs only
# what is missing). Needs root and access to the Debian package registry.
set -euo pipefail
PKGS=(
  iproute2            # ip netns / veth for every black-box test
  isc-dhcp-client     # dhclient: a real DHCP client
  busybox-static      # udhcpc: a second real DHCP client
  kea-admin           # perfdhcp: load generator (and Kea's tools)
  kea-dhcp4-server    # Kea: benchmark baseline
  isc-dhcp-server     # ISC dhcpd: benchmark baseline (and failover partner later)
  tftp-hpa            # tftp: a real TFTP client
  curl                # HTTP (Range) and TFTP (blksize) client
  ipxe                # iPXE binaries for `provd assets init`
  qemu-system-x86     # the lab's VMs (TCG)
  ipxe-qemu           # iPXE option ROMs for BIOS VMs
  ovmf                # UEFI firmware for UEFI VMs
  linux-image-cloud-amd64  # the lab mini-installer's kernel
  libvirt-daemon-system    # libvirtd for the TLS test (started by the test, in a namespace)
  libvirt-daemon-driver-qemu
  libvirt-clients     # virsh, virt-pki-validate, virt-pki-query-dn
  gnutls-bin          # certtool (virt-pki-validate uses it)
  openssl             # hosts make keys and CSRs with it in %post
  libguestfs-tools    # virt-sysprep and guestfish (vm sysprep; the VM test builds its template)
  virtinst            # virt-clone: the clone benchmark's peer
  libvirt-dev         # building provd: the virt crate links libvirt
  pkg-config          # ... and finds it with pkg-config
  systemd             # systemd-analyze verify checks contrib/systemd/provd.service
  util-linux          # setpriv: provd run with exactly the unit's capabilities
  debootstrap         # a clean Debian 12 root the package test installs provd's .deb into
  dpkg-dev            # dpkg-deb builds the package (contrib/deb/build.sh)
  chromium            # the console test's real browser (headless, DevTools protocol)
  python3-websocket   # ... driven from Debian's python3 over its DevTools websocket
  procps              # pgrep
  openipmi            # ipmi_sim: the lab's simulated BMCs (IPMI over LAN)
  ipmitool            # provd's IPMI driver, and the tests' independent check
  python3-venv        # a venv for sushy-tools (the Redfish emulator)
  python3-dev         # ... whose libvirt-python builds against libvirt-dev
  fdisk               # sfdisk: the Debian image's partitions, the installer's partition growth
  e2fsprogs           # mkfs.ext4, e2fsck, resize2fs (image build, installer environment)
  dosfstools          # mkfs.vfat: the Debian image's EFI system partition
  mtools              # mmd/mcopy: its boot loader written into the ESP without mounting it
  qemu-guest-agent    # qemu-ga in the lab initramfs: quiesced live snapshots, guest-exec
  bind9               # named: the real DNS server provd updates (RFC 2136 + TSIG)
  bind9-dnsutils      # dig: the tests' independent check of what named holds
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  extra=()
  # Some machines carry a newer qemu-utils (a backport with no repository behind it) that
  # Breaks Debian 12's qemu-system-x86; take qemu-utils from the same release instead.
  if printf '%s\n' "${missing[@]}" | grep -qx qemu-system-x86; then
    want=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$have" ] && [ -n "$want" ] && [ "$have" != "$want" ]; then
      extra=("qemu-utils=$want" --allow-downgrades)
    fi
  fi
  # Installing libvirt must not start daemons here (no systemd, but sysvinit scripts would
  # run): a libvirtd in the root namespace would bring up its default NAT network. The
  # standard Debian way to say "start nothing" is a policy-rc.d that exits 101.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" "${extra[@]}" || { [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
  [ -n "$guard" ] && rm -f /usr/sbin/policy-rc.d
fi
# ksvalidator (pykickstart) checks every rendered kickstart.
if ! command -v ksvalidator >/dev/null; then
  echo "installing pykickstart (pip)"
  python3 -m pip install -q pykickstart 2>/dev/null || python3 -m pip install -q --break-system-packages pykickstart \
    || { apt-get install -y -q python3-pip && python3 -m pip install -q --break-system-packages pykickstart; }
fi
# sushy-tools (PyPI): the Redfish emulator provd's Redfish driver is tested against.
SUSHY=/opt/provd-test/sushy
if [ ! -x "$SUSHY/bin/sushy-emulator" ]; then
  echo "installing sushy-tools (pip, venv $SUSHY)"
  python3 -m venv "$SUSHY"
  "$SUSHY/bin/pip" install -q sushy-tools==2.2.0 libvirt-python
fi
# The Secure Boot chain (shim-signed, grub-efi-amd64-signed), downloaded and unpacked, never
# installed: the lab's Secure Boot VMs and the assets tests use it.
"$(dirname "$0")/signed-chain.sh" >/dev/null
# The Debian packages enable services we do not want running outside the tests.
for svc in isc-dhcp-server kea-dhcp4-server; do
  command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1 || true
done
echo "dependencies present"
