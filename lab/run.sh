#!/bin/bash
# Set up and run the lab: provd in a private network namespace with a bridge, and real DHCP
# clients (ISC dhclient, busybox udhcpc) on their own namespaces attached to that bridge.
# Shows what provd handed out, then removes every namespace, process and file it made.
# (The QEMU PXE VMs join this same bridge once the boot chain lands; see README.)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the lab needs root (network namespaces): sudo $0"; exit 1; }
lab/deps.sh >/dev/null
cargo build --release -q
PROVD=$PWD/target/release/provd
W=/tmp/provd-lab
NS=provd-lab

cleanup() {
  for ns in $NS provd-lab-c1 provd-lab-c2; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf $W
}
trap cleanup EXIT
cleanup
mkdir -p $W

step() { printf '\n== %s\n' "$*"; }
step "network: namespace $NS, bridge labbr0 10.200.0.1/24"
ip netns add $NS
ip -n $NS link set lo up
ip -n $NS link add labbr0 type bridge
ip -n $NS addr add 10.200.0.1/24 dev labbr0
ip -n $NS link set labbr0 up

step "provd serve --config site-configs/lab.toml"
$PROVD check site-configs/lab.toml
ip netns exec $NS $PROVD serve --config site-configs/lab.toml > $W/provd.log 2>&1 &
for _ in $(seq 50); do grep -q "DHCP listening" $W/provd.log 2>/dev/null && break; sleep 0.1; done
grep -q "DHCP listening" $W/provd.log || { cat $W/provd.log; exit 1; }

# A client namespace plugged into the bridge with a veth; $2 sets its MAC.
client_ns() {
  ip netns add $1
  ip -n $1 link set lo up
  ip -n $NS link add p-$1 type veth peer name eth0 netns $1
  ip -n $NS link set p-$1 master labbr0 up
  ip -n $1 link set eth0 address $2 up
}
cat > $W/script.sh <<'EOS'
#!/bin/sh
ev="${reason:-$1}"; addr="${new_ip_address:-$ip}"
case "$ev" in BOUND|bound|RENEW|renew|REBOOT) ip addr replace "$addr/24" dev "$interface"; echo "  $interface got $addr ($ev)";; esac
exit 0
EOS
chmod +x $W/script.sh

step "client 1: ISC dhclient (a host provd knows: reserved address)"
client_ns provd-lab-c1 52:54:00:00:c0:01
ip netns exec provd-lab-c1 timeout 30 dhclient -4 -1 -sf $W/script.sh -lf $W/c1.leases -pf $W/c1.pid eth0
step "client 2: busybox udhcpc (an unknown MAC: a pool address)"
client_ns provd-lab-c2 52:54:00:00:c0:99
ip netns exec provd-lab-c2 timeout 30 busybox udhcpc -q -n -i eth0 -t 5 -T 2 -s $W/script.sh

step "provd leases list"
ip netns exec $NS $PROVD leases list --config site-configs/lab.toml
step "provd stats"
ip netns exec $NS $PROVD stats --config site-configs/lab.toml | grep -v ' 0$'
step "done; cleaning up"
