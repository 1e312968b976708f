#!/bin/bash
# Issue 35's proof on the image lab's real Debian hypervisors (after lab/real-hypervisor.sh
# has them `ready`, or by it): their data-center network, as lab/lab.toml's profile
# lab-debian12-kvm describes it and provd rendered it into each one's systemd-networkd.
# Each hypervisor VM's two NICs are bonded (802.3ad) against a port channel of the lab's
# switch (a VM whose Linux bonding driver and VLAN-filtering bridge are the switch:
# lab/switch/init); the boot network is untagged on the bond, migration on VLAN 20 (br-mig,
# IPAM addresses), tenants on VLAN 100 (br-t100). The run succeeds only when
#   1. LACP really negotiated: each port channel's active aggregator holds both ports and
#      has the hypervisor's bond as its partner (/proc/net/bonding on the switch);
#   2. every hypervisor is named in the lab's BIND by provd (A, PTR, HOST-migration),
#      the lab namespace resolves only through it (its /etc/hosts names no hypervisor), and
#      the pool has verified each one over TLS at that name;
#   3. a guest deployed with the tenant NIC profile (role = "tenant") sits on br-t100, gets
#      its address on the tenant VLAN from the switch's DHCP, and provd never sees it (no
#      lease, no discovery, nothing in its log for that MAC);
#   4. `provd vm migrate --site lab` moves the running guest to the other hypervisor over
#      the migration VLAN: the bytes are counted on VLAN 20 of the destination's port
#      channel, not on its boot network;
#   5. shutting the destination's boot-NIC port on the switch (a pulled member) leaves the
#      port channel working on the other member: a fresh libvirt TLS connection by DNS name
#      still reaches the hypervisor, the guest still runs, the pool keeps it ready; the port
#      comes back into the aggregate when unshut.
# Everything this script made on the hypervisors is removed at the end.
#   sudo lab/datacenter-network.sh        (after lab/real-hypervisor.sh --keep, or by it)
# Environment: PROVD (default target/debug/provd), GUEST_TIMEOUT (seconds, default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (the lab's network namespace): sudo $0"; exit 1; }
PROVD=${PROVD:-$PWD/target/debug/provd}
W=/var/lib/provd-lab
DOMAIN=lab.provd
DNS=10.200.0.1
TEMPLATE=lab-tenant.template
GUEST=lab-tenant-1
ISO=/usr/lib/ipxe/ipxe.iso
GUEST_TIMEOUT=${GUEST_TIMEOUT:-600}

in_lab() { ip netns exec provd-lab "$@"; }
# shellcheck source=lab/hypervisor-volume.sh
. lab/hypervisor-volume.sh
cfg=()
for f in "$W"/config/*.toml; do cfg+=(--config "$f"); done
[ -e "${cfg[1]:-}" ] || { echo "no lab is up ($W/config has no config): run lab/real-hypervisor.sh --keep first"; exit 1; }
[ -S "$W/switch/console.sock" ] || { echo "the lab has no switch (its image profile bonds no ports)"; exit 1; }
provd() { in_lab "$PROVD" "$@"; }
switch() { in_lab lab/switch.py --socket "$W/switch/console.sock" "$1"; }
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "FAILED: $*"; exit 1; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

OP="$W/dc-operator"
rm -rf "$OP"
provd pki issue-client lab-dc-operator --out "$OP" "${cfg[@]}" >/dev/null
pool=$(provd hypervisors list --site lab --json "${cfg[@]}")
mapfile -t names < <(echo "$pool" | json 'print("\n".join(h["host"] for h in d if h.get("status") == "ready"))')
[ ${#names[@]} -ge 2 ] || fail "two ready hypervisors needed; the pool has: $(echo "$pool" | json 'print([(h["host"], h.get("status")) for h in d])')"
uri_of() { echo "$pool" | json "print(next(h['uri'] for h in d if h['host'] == '$1'))"; }
index_of() { echo "${1##*-}"; }   # lab-N is the switch's port channel bondN

# 1. LACP, seen from the switch.
lacp_check='
import re, sys
text = sys.stdin.read()
want = int(sys.argv[1])
active = re.search(r"Active Aggregator Info:\s+Aggregator ID: (\d+)\s+Number of ports: (\d+).*?Partner Mac Address: (\S+)", text, re.S)
if not active:
    sys.exit("no active aggregator:\n" + text)
agg, ports, partner = active.group(1), int(active.group(2)), active.group(3)
if partner == "00:00:00:00:00:00":
    sys.exit("no LACP partner (the other end does not speak LACP)")
if ports != want:
    sys.exit("the active aggregator has %d port(s), not %d" % (ports, want))
print("aggregator %s: %d port(s), partner %s" % (agg, ports, partner))
'
for h in "${names[@]}"; do
  n=$(index_of "$h")
  r=$(switch "cat /proc/net/bonding/bond$n" | python3 -c "$lacp_check" 2) || fail "$h's port channel (bond$n): $r"
  stamp "LACP: $h's port channel bond$n: $r"
done

# 2. Names: provd's, in the lab's BIND; the namespace resolves only through it.
for h in "${names[@]}"; do
  show=$(provd hosts show "$h" --json "${cfg[@]}")
  # The reservation, from the config provd serves.
  ip=$(python3 -c 'import sys, tomllib
for f in sys.argv[2:]:
    for s in tomllib.load(open(f, "rb")).get("sites", {}).values():
        for h in s.get("hosts", []):
            if h["hostname"] == sys.argv[1]:
                print(h.get("ip", ""))' "$h" "$W"/config/*.toml)
  mig=$(echo "$show" | json 'print(next((a["address"] for a in d.get("addresses", []) if a["role"] == "migration"), ""))')
  [ -n "$ip" ] && [ -n "$mig" ] || fail "$h: no reserved address or no migration address in provd hosts show: $show"
  a=$(in_lab dig +short @"$DNS" "$h.$DOMAIN" A)
  ptr=$(in_lab dig +short @"$DNS" -x "$ip")
  am=$(in_lab dig +short @"$DNS" "$h-migration.$DOMAIN" A)
  [ "$a" = "$ip" ] || fail "$h.$DOMAIN A is '$a', provd reserved $ip"
  [ "$ptr" = "$h.$DOMAIN." ] || fail "PTR of $ip is '$ptr', not $h.$DOMAIN."
  [ "$am" = "$mig" ] || fail "$h-migration.$DOMAIN A is '$am', IPAM gave $mig"
  if in_lab grep -qw "$h" /etc/hosts; then fail "the lab's /etc/hosts names $h: the name would not come from DNS"; fi
  resolved=$(in_lab getent hosts "$h.$DOMAIN" | awk '{print $1}')
  [ "$resolved" = "$ip" ] || fail "the lab namespace resolves $h.$DOMAIN to '$resolved'"
  uri=$(uri_of "$h")
  [ "$uri" = "qemu+tls://$h.$DOMAIN/system" ] || fail "the pool reaches $h at $uri, not by its name"
  stamp "DNS: $h.$DOMAIN A $a, PTR $ptr, $h-migration A $am; the pool verified $uri (ready)"
done

# 3. A tenant guest: on br-t100, addressed by the tenant VLAN's DHCP, unseen by provd.
cleanup() {
  for h in "${names[@]}"; do
    u="$(uri_of "$h")?pkipath=$OP"
    provd vm purge "$GUEST" --force -C "$u" >/dev/null 2>&1 || true
    provd vm purge "$TEMPLATE" -C "$u" >/dev/null 2>&1 || true
    hv_delete_volume "$u" lab-tenant.iso
  done
  switch "/usr/sbin/ip link set eth1 up; /usr/sbin/ip link set eth3 up" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
# The fixture: the same read-only boot medium (iPXE) and template on every hypervisor, as
# an ISO library on shared storage would be; a read-only disk needs no storage copy to
# migrate. The guest's NIC comes from the NIC profile, not from the template.
xml=$(mktemp)
cat > "$xml" <<XML
<domain type='qemu'>
  <name>$TEMPLATE</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='$HV_IMAGES_DIR/lab-tenant.iso'/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <serial type='pty'/>
    <console type='pty'/>
  </devices>
</domain>
XML
for h in "${names[@]}"; do
  u="$(uri_of "$h")?pkipath=$OP"
  hv_put_volume "$u" lab-tenant.iso "$ISO"
  in_lab virsh -q -c "$u" define "$xml" >/dev/null
done
rm -f "$xml"
stamp "template $TEMPLATE (iPXE on a read-only disk, 256 MiB) on ${names[*]}"

deployed=$(provd vm deploy "$GUEST" --from "$TEMPLATE" --site lab --nic-profile lab-tenant --pkipath "$OP" --json "${cfg[@]}")
mac=$(echo "$deployed" | json 'print(d["macs"][0])')
src_uri=$(echo "$deployed" | json 'print(d["uri"])')
src=""
for h in "${names[@]}"; do [ "$src_uri" = "$(uri_of "$h")?pkipath=$OP" ] && src=$h; done
[ -n "$src" ] || fail "deploy placed $GUEST at $src_uri, none of ${names[*]}"
bridge=$(in_lab virsh -q -c "$src_uri" domiflist "$GUEST" | awk '{print $3}')
[ "$bridge" = br-t100 ] || fail "$GUEST's NIC is on '$bridge', not the tenant bridge br-t100"
stamp "provd vm deploy --nic-profile lab-tenant: $GUEST on $src, NIC $mac on $bridge (VLAN 100)"

while :; do
  lease=$(switch "dumpleases -f /var/lib/misc/udhcpd.leases" | grep -i "$mac" || true)
  [ -n "$lease" ] && break
  [ $(( $(date +%s) - t0 )) -lt "$GUEST_TIMEOUT" ] || fail "no tenant lease for $mac after ${GUEST_TIMEOUT}s"
  sleep 3
done
stamp "the tenant VLAN's DHCP (on the switch) leased: $(echo "$lease" | awk '{print $1, $2}')"
if provd leases list --json "${cfg[@]}" | json "import sys; sys.exit(0 if any(l.get('mac') == '$mac' for l in d) else 1)"; then
  fail "provd leased to the tenant guest $mac: the tenant VLAN reaches the boot network"
fi
if provd hosts list --discovered --json "${cfg[@]}" | json "import sys; sys.exit(0 if any(h.get('mac') == '$mac' for h in d) else 1)"; then
  fail "provd discovered the tenant guest $mac"
fi
if grep -qi "$mac" "$W/provd.log"; then fail "provd's log mentions the tenant guest $mac: $(grep -i "$mac" "$W/provd.log" | head -3)"; fi
stamp "provd never saw $mac: no lease, no discovery, nothing in its log"

# 4. Migration over VLAN 20.
dst=""
for h in "${names[@]}"; do [ "$h" != "$src" ] && [ -z "$dst" ] && dst=$h; done
dn=$(index_of "$dst")
vlan_tx() { # bytes the switch sent on VLAN $2 of port channel bond$1
  switch "/usr/sbin/bridge -s -j vlan show dev bond$1" | json "print(next(v['tx_bytes'] for v in d[0]['vlans'] if v['vid'] == $2))"
}
m20=$(vlan_tx "$dn" 20)
m1=$(vlan_tx "$dn" 1)
moved=$(provd vm migrate "$GUEST" "$dst" --site lab --pkipath "$OP" -C "$src_uri" "${cfg[@]}" 2>&1) || fail "provd vm migrate: $moved"
d20=$(( $(vlan_tx "$dn" 20) - m20 ))
d1=$(( $(vlan_tx "$dn" 1) - m1 ))
echo "$moved" | sed 's/^/    /'
echo "$moved" | grep -q "memory over qemu+tls://$(provd hosts show "$dst" --json "${cfg[@]}" | json 'print(next(a["address"] for a in d["addresses"] if a["role"] == "migration"))')/system" ||
  fail "the migration did not go over $dst's migration address"
state=$(in_lab virsh -q -c "$(uri_of "$dst")?pkipath=$OP" domstate "$GUEST")
[ "$state" = running ] || fail "$GUEST is '$state' on $dst after the migration"
[ "$d20" -gt 1000000 ] || fail "only $d20 bytes crossed VLAN 20 toward $dst"
[ "$d1" -lt "$d20" ] || fail "more went over $dst's boot network ($d1 bytes) than over VLAN 20 ($d20)"
stamp "migrated $GUEST $src -> $dst: $d20 bytes on VLAN 20 of $dst's port channel, $d1 on its boot network; running there"

# 5. A pulled member: the destination's boot-NIC port shut on the switch.
port=eth$(( 2 * dn - 1 ))
switch "/usr/sbin/ip link set $port down"
pulled=$(date +%s)
sleep 8   # LACP fast: the hypervisor's side times the member out after 3 s
r=$(switch "cat /proc/net/bonding/bond$dn" | python3 -c "$lacp_check" 1) || fail "after pulling $port: $r"
stamp "pulled $port (bond$dn, $dst's boot NIC): $r"
fresh=$(in_lab virsh -q -c "qemu+tls://$dst.$DOMAIN/system?pkipath=$OP" domstate "$GUEST") || fail "a new TLS connection to $dst.$DOMAIN failed with one member pulled"
[ "$fresh" = running ] || fail "$GUEST is '$fresh' with one member pulled"
while :; do
  checked=$(provd hypervisors list --site lab --json "${cfg[@]}" | json "h = next(h for h in d if h['host'] == '$dst'); print(h['state'], h.get('status'), h['checked_at'])")
  read -r state status at <<< "$checked"
  [ "$state" = ready ] && [ "$status" = ready ] || fail "the pool marks $dst '$state' ($status) with one member pulled"
  [ "$at" -gt "$pulled" ] && break
  [ $(( $(date +%s) - pulled )) -lt 180 ] || fail "the pool has not checked $dst since the member was pulled"
  sleep 3
done
stamp "one member down: a new TLS connection to $dst.$DOMAIN works, $GUEST runs, the pool keeps $dst ready"
switch "/usr/sbin/ip link set $port up"
# Rejoined means both members in the active aggregator at three checks in a row: under TCG
# the partners' LACP can renegotiate once after the member comes back (a clean run saw the
# aggregator at 2, then 1, then 2 ports within seconds), and one good look is not stable.
steady=0
r="no answer from the switch"
for _ in $(seq 1 60); do
  if r=$(switch "cat /proc/net/bonding/bond$dn" | python3 -c "$lacp_check" 2 2>&1); then
    steady=$((steady + 1))
    [ "$steady" -ge 3 ] && break
  else
    steady=0
  fi
  sleep 1
done
[ "$steady" -ge 3 ] || fail "$port did not rejoin bond$dn steadily within 60 s: $r"
stamp "unshut $port: $r"
echo "datacenter-network: ok in $(( $(date +%s) - t0 ))s"
