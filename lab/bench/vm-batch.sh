#!/bin/bash
# Batch deploy benchmark (issue 38): N (default 50) VMs from one template on one private
# libvirtd, same run, each way from scratch:
#   1. provd: `vm deploy --count N --name-pattern b-{n} --linked --no-start` (a NoCloud seed
#      per VM from a running provd, the plan, PARALLEL clones at once), then the same
#      command again (a rerun: nothing to make);
#   2. a virt-clone loop (`virt-clone --auto-clone`: full copies; virt-clone 4.1 has no
#      linked clones);
#   3. linked clones by hand: a loop of `qemu-img create -b` (overlay) + `virt-clone
#      --preserve-data` (the definition).
# The template is a 4 GiB qcow2 with 256 MiB written. Needs root, lab/deps.sh packages and
# `cargo build --release`. Usage: sudo lab/bench/vm-batch.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-50}
PARALLEL=${PARALLEL:-4}
PROVD=${PROVD:-target/release/provd}
[ -x "$PROVD" ] || { echo "build first: cargo build --release"; exit 1; }
command -v virt-clone >/dev/null || { echo "virt-clone missing: lab/deps.sh"; exit 1; }
. lab/bench/private-libvirtd.sh
W=$(mktemp -d /var/tmp/provd-bench-batch.XXXXXX)
chmod 755 "$W"
NS=pvb-batch-$$
cleanup() {
  stop_private_libvirtd "$NS"   # provd runs in the namespace too
  rm -rf "$W"
}
trap cleanup EXIT
start_private_libvirtd "$NS" "$W"

# provd serves the seeds; its site is one end of a veth pair inside the namespace (nothing is
# sent anywhere).
ip -n "$NS" link add pbb0 type veth peer name pbb1
ip -n "$NS" addr add 10.251.0.1/24 dev pbb0
ip -n "$NS" link set pbb0 up && ip -n "$NS" link set pbb1 up
mkdir -p "$W/assets" "$W/state"
chmod 700 "$W/state"
cat > "$W/bench.toml" <<TOML
[daemon]
templates_dir = "$PWD/templates"
assets_dir = "$W/assets"
state_dir = "$W/state"
api_listen = "127.0.0.1:6767"

[sites.bb]
server_address = "10.251.0.1"
listen = [{ interface = "pbb0", address = "10.251.0.1" }]
[[sites.bb.subnets]]
prefix = "10.251.0.0/24"
pools = [{ start = "10.251.0.100", end = "10.251.0.200" }]
TOML
ip netns exec "$NS" "$PWD/$PROVD" serve --config "$W/bench.toml" >"$W/provd.log" 2>&1 &
disown
for _ in $(seq 100); do [ -s "$W/state/api-token" ] && ip netns exec "$NS" curl -s -o /dev/null http://127.0.0.1:6767/healthz && break; sleep 0.1; done

qemu-img create -q -f qcow2 "$W/images/tpl_system.qcow2" 4G
qemu-io -f qcow2 -c "write -P 7 0 256M" "$W/images/tpl_system.qcow2" >/dev/null
cat > "$W/tpl.xml" <<XML
<domain type='qemu'><name>tpl</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$W/images/tpl_system.qcow2'/><target dev='vda' bus='virtio'/></disk>
<interface type='user'><mac address='52:54:00:99:01:01'/><model type='virtio'/></interface></devices></domain>
XML
virsh -q -c "$URI" define "$W/tpl.xml" >/dev/null
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }
count() { virsh -q -c "$URI" list --all --name | grep -c "^$1" || true; }

deploy() {
  ip netns exec "$NS" "$PWD/$PROVD" vm deploy --from tpl --count "$N" --name-pattern 'b-{n}' --linked --no-start \
    --parallel "$PARALLEL" --hypervisor "$URI" --config "$W/bench.toml" --server 127.0.0.1:6767 \
    --state-dir "$W/state" --json 2>/dev/null
}
echo "# $N VMs from a 4 GiB qcow2 template with 256 MiB written, one private libvirtd, $(nproc) cores"
t0=$(now); deploy > "$W/batch.json"; t1=$(now)
made=$(python3 -c "import json,sys; print(sum(v['result'] == 'deployed' for v in json.load(open(sys.argv[1]))['vms']))" "$W/batch.json")
[ "$made" = "$N" ] && [ "$(count b-)" = "$N" ] || { echo "provd deployed $made of $N"; exit 1; }
P=$(secs "$t0" "$t1")
echo "provd vm deploy --count $N --linked (parallel $PARALLEL, a seed each): $P s"
t0=$(now); deploy > "$W/rerun.json"; t1=$(now)
R=$(secs "$t0" "$t1")
echo "provd rerun (all $N exist, nothing made): $R s"

t0=$(now)
for i in $(seq "$N"); do
  virt-clone --connect "$URI" --original tpl --name "v-$i" --auto-clone --quiet >/dev/null 2>&1
done
t1=$(now)
[ "$(count v-)" = "$N" ] || { echo "virt-clone made $(count v-) of $N"; exit 1; }
V=$(secs "$t0" "$t1")
echo "virt-clone loop (full copies): $V s"

t0=$(now)
for i in $(seq "$N"); do
  qemu-img create -q -f qcow2 -b "$W/images/tpl_system.qcow2" -F qcow2 "$W/images/s-$i.qcow2"
  virt-clone --connect "$URI" --original tpl --name "s-$i" --preserve-data --file "$W/images/s-$i.qcow2" --quiet >/dev/null 2>&1
done
t1=$(now)
[ "$(count s-)" = "$N" ] || { echo "the overlay loop made $(count s-) of $N"; exit 1; }
S=$(secs "$t0" "$t1")
echo "qemu-img overlay + virt-clone --preserve-data loop (linked by hand): $S s"
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
echo "RESULT provd ${P} s; virt-clone loop ${V} s ($(ratio "$V" "$P")x provd); linked by hand ${S} s ($(ratio "$S" "$P")x provd); rerun ${R} s"
