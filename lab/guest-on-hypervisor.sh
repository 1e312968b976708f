#!/bin/bash
# A guest on the image lab's real hypervisor: with `provd lab up --image debian12-kvm` up and
# its hosts `ready`, `provd vm deploy --site lab` places a small VM on the pool's hypervisor
# (over libvirt TLS, with an operator certificate from the lab's CA), clones it from a
# template there and starts it (nested TCG). The run succeeds only when
#   1. libvirt (through `provd vm list --site lab`) shows the guest running;
#   2. the guest's own DHCP request has reached provd through the hypervisor's bridge (a
#      lease for the MAC deploy gave it);
#   3. the guest's Linux has reported its hardware to provd: the site answers an unknown
#      machine with its discovery image, so the guest netboots provd's installer
#      environment, which reads the machine and posts what it found. The report must carry
#      the SMBIOS serial `provd vm deploy` gave this guest (its NoCloud seed URL), its MAC,
#      1 CPU and 512 MiB: the machine provd discovered is the VM provd deployed.
#
# The guest's disk is iPXE (Debian's ipxe.iso, an isohybrid disk image); its NIC has no
# option ROM (the image carries no ipxe-qemu), so iPXE's own virtio driver does the DHCP.
# The template is put on the hypervisor with virsh (vol-upload, define): the fixture, not the
# thing under test (`provd vm init --connect` could make it, but its NIC profiles cannot
# switch the option ROM off). Everything this script made on the hypervisor is removed at the end.
#   sudo lab/guest-on-hypervisor.sh        (after lab/real-hypervisor.sh --keep, or by it)
# Environment: PROVD (default target/debug/provd), GUEST_TIMEOUT (seconds, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (the lab's network namespace): sudo $0"; exit 1; }
PROVD=${PROVD:-$PWD/target/debug/provd}
W=/var/lib/provd-lab
TEMPLATE=lab-guest.template
GUEST=lab-guest-1
GUEST_TIMEOUT=${GUEST_TIMEOUT:-900}
ISO=/usr/lib/ipxe/ipxe.iso

in_lab() { ip netns exec provd-lab "$@"; }
# shellcheck source=lab/hypervisor-volume.sh
. lab/hypervisor-volume.sh
cfg=()
for f in "$W"/config/*.toml; do cfg+=(--config "$f"); done
[ ${#cfg[@]} -gt 0 ] || { echo "no lab is up ($W/config has no config): run lab/real-hypervisor.sh --keep first"; exit 1; }
provd() { in_lab "$PROVD" "$@"; }
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

# An operator's libvirt client certificate (OU=provd operator), which every hypervisor's
# tls_allowed_dn_list admits.
OP="$W/guest-operator"
rm -rf "$OP"
provd pki issue-client lab-operator --out "$OP" "${cfg[@]}" >/dev/null
# The pool's view: the first ready hypervisor of site lab.
uri=$(provd hypervisors list --site lab --json "${cfg[@]}" |
  python3 -c 'import json,sys; r=[h["uri"] for h in json.load(sys.stdin) if h.get("status")=="ready"]; print(r[0] if r else "")')
[ -n "$uri" ] || { echo "site lab has no ready hypervisor (provd hypervisors list --site lab)"; exit 1; }
URI="$uri?pkipath=$OP"
stamp "hypervisor $uri (operator certificate from the lab's CA)"
virsh_hv() { in_lab virsh -q -c "$URI" "$@"; }

cleanup() {
  provd vm purge "$GUEST" --force -C "$URI" >/dev/null 2>&1 || true
  provd vm purge "$TEMPLATE" -C "$URI" >/dev/null 2>&1 || true
  virsh_hv pool-destroy provd-lab-fixture >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# The template: ipxe.iso as a raw volume, a TCG domain (the lab VM has no SVM), 512 MiB (the
# discovery kernel and initramfs do not fit in less).
hv_put_volume "$URI" "$TEMPLATE.img" "$ISO"
xml=$(mktemp)
cat > "$xml" <<XML
<domain type='qemu'>
  <name>$TEMPLATE</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$HV_IMAGES_DIR/$TEMPLATE.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <source bridge='br0'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
XML
virsh_hv define "$xml" >/dev/null
rm -f "$xml"
stamp "template $TEMPLATE defined on $uri (iPXE, 512 MiB, TCG)"

# The thing under test: provd places, seeds, clones and starts the guest.
deploy_start=$(date +%s)
deployed_json=$(provd vm deploy "$GUEST" --from "$TEMPLATE" --site lab --pkipath "$OP" --json "${cfg[@]}")
deployed=$(date +%s)
mac=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["macs"][0] if d["macs"] else "")' "$deployed_json")
stamp "provd vm deploy: $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["vm"]["name"], d["vm"]["state"], "seed", d["seed"]["url"])' "$deployed_json")"
[ -n "$mac" ] || { echo "FAILED: $GUEST has no NIC MAC: $deployed_json"; exit 1; }
# Independently of what deploy said: the site's listing (every ready hypervisor of the pool).
state=$(provd vm list --site lab --pkipath "$OP" --json "${cfg[@]}" |
  python3 -c "import json,sys; print(next((d['state'] for d in json.load(sys.stdin) if d['name']=='$GUEST'), 'absent'))")
stamp "provd vm list --site lab: $GUEST is $state"
[ "$state" = running ] || { echo "FAILED: $GUEST is $state, not running"; exit 1; }
stamp "$GUEST's NIC is $mac; waiting for its DHCP to reach provd through br0 (nested TCG)"

while :; do
  if provd leases list --json "${cfg[@]}" 2>/dev/null |
    python3 -c "import json,sys; sys.exit(0 if any(l.get('mac')=='$mac' for l in json.load(sys.stdin)) else 1)"; then
    break
  fi
  if [ $(( $(date +%s) - deploy_start )) -gt "$GUEST_TIMEOUT" ]; then
    echo "FAILED: no lease for $mac after ${GUEST_TIMEOUT}s"
    exit 1
  fi
  sleep 2
done
lease=$(provd leases list "${cfg[@]}" 2>/dev/null | grep -i "$mac" || true)
leased=$(date +%s)
stamp "provd leased to the guest: $lease"

# 3. The guest's own report (provd's discovery image running inside it).
seed_url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["seed"]["url"])' "$deployed_json")
check_report='
import json, sys
mac, seed = sys.argv[1], sys.argv[2]
host = next((h for h in json.load(sys.stdin) if h["mac"] == mac), None)
facts = (host or {}).get("facts")
if not facts:
    sys.exit(1)
problems = []
if seed not in (facts.get("system_serial") or ""):
    problems.append("SMBIOS serial %r is not the deployed seed %r" % (facts.get("system_serial"), seed))
if facts.get("cpus") != 1 or facts.get("memory_mib") != 512:
    problems.append("reported %s CPU(s), %s MiB; deployed 1 and 512" % (facts.get("cpus"), facts.get("memory_mib")))
if mac not in [n.get("mac") for n in facts.get("nics", [])]:
    problems.append("no NIC %s in %s" % (mac, facts.get("nics")))
if problems:
    print("FAILED: the report of " + mac + ": " + "; ".join(problems))
    sys.exit(2)
print("%s reported: %s, %d CPU(s), %d MiB, serial %s" % (mac, facts.get("system_product"), facts["cpus"], facts["memory_mib"], facts["system_serial"]))
'
stamp "waiting for the guest's hardware report (provd's discovery image inside it)"
while :; do
  rc=0
  report=$(provd hosts list --discovered --json "${cfg[@]}" 2>/dev/null | python3 -c "$check_report" "$mac" "$seed_url") || rc=$?
  [ $rc = 0 ] && break
  [ $rc = 2 ] && { echo "$report"; exit 1; }
  if [ $(( $(date +%s) - deploy_start )) -gt "$GUEST_TIMEOUT" ]; then
    echo "FAILED: no hardware report from $mac after ${GUEST_TIMEOUT}s"
    exit 1
  fi
  sleep 2
done
stamp "$report"
echo "guest-on-hypervisor: ok; deploy (place, seed, clone, start) $(( deployed - deploy_start ))s, guest DHCP at $(( leased - deploy_start ))s, guest Linux reported at $(( $(date +%s) - deploy_start ))s"
