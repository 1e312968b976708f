#!/bin/bash
# Clone benchmark, provd vs virt-clone, same run, same libvirtd, same template:
#   1. full clone of a multi-GB qcow2 template (GIB_DATA GiB written of a GIB_VIRT GiB disk):
#      `provd vm clone --full` vs `virt-clone --auto-clone`, alternating who goes first;
#   2. linked clone of a 1 GiB and a 50 GiB (sparse) template: the time must not grow with
#      the template's size.
# A private libvirtd runs in its own network and mount namespace (as the tests do), so the
# machine's libvirt is not touched. Needs root, lab/deps.sh packages and `cargo build --release`.
# Usage: sudo lab/bench/vm-clone.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
GIB_VIRT=${GIB_VIRT:-8}
GIB_DATA=${GIB_DATA:-3}
PROVD=${PROVD:-target/release/provd}
[ -x "$PROVD" ] || { echo "build first: cargo build --release"; exit 1; }
command -v virt-clone >/dev/null || { echo "virt-clone missing: lab/deps.sh"; exit 1; }

. lab/bench/private-libvirtd.sh
W=$(mktemp -d /var/tmp/provd-bench-clone.XXXXXX)
chmod 755 "$W"
NS=pvb-clone-$$
cleanup() {
  stop_private_libvirtd "$NS"
  rm -rf "$W"
}
trap cleanup EXIT
start_private_libvirtd "$NS" "$W"

define() { # name disk
  cat > "$W/$1.xml" <<XML
<domain type='qemu'><name>$1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$2'/><target dev='vda' bus='virtio'/></disk>
<interface type='user'><mac address='52:54:00:99:00:0${3:-1}'/><model type='virtio'/></interface>
<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/></devices></domain>
XML
  virsh -q -c "$URI" define "$W/$1.xml" >/dev/null
}
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l | xargs printf '%.2f'; }

echo "# template: ${GIB_VIRT} GiB qcow2 with ${GIB_DATA} GiB written (qemu-io, random pattern per MiB)"
qemu-img create -q -f qcow2 "$W/images/tpl_system.qcow2" "${GIB_VIRT}G"
# Different bytes in every MiB, so nothing can be skipped as zeros.
cmds=()
for i in $(seq 0 $((GIB_DATA * 1024 - 1))); do cmds+=(-c "write -P $((i % 251 + 1)) ${i}M 1M"); done
qemu-io -f qcow2 "${cmds[@]}" "$W/images/tpl_system.qcow2" >/dev/null
define tpl "$W/images/tpl_system.qcow2" 1
echo "# template disk: $(du -h "$W/images/tpl_system.qcow2" | cut -f1) on disk"

provd_full() { "$PROVD" vm clone tpl "p$1" --full --connect "$URI" >/dev/null 2>&1; }
virtclone_full() { virt-clone --connect "$URI" --original tpl --name "v$1" --auto-clone --quiet >/dev/null 2>&1; }
purge() { "$PROVD" vm purge "$1" --connect "$URI" >/dev/null; }
declare -a P V
for r in $(seq "$ROUNDS"); do
  sync; echo 3 > /proc/sys/vm/drop_caches
  if (( r % 2 )); then
    t0=$(now); provd_full "$r"; t1=$(now); sync; echo 3 > /proc/sys/vm/drop_caches
    t2=$(now); virtclone_full "$r"; t3=$(now)
  else
    t2=$(now); virtclone_full "$r"; t3=$(now); sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); provd_full "$r"; t1=$(now)
  fi
  P+=("$(secs "$t0" "$t1")"); V+=("$(secs "$t2" "$t3")")
  cmp_out=$(qemu-img compare -q "$W/images/tpl_system.qcow2" "$W/images/p${r}_system.qcow2" && echo same || echo DIFFERENT)
  echo "round $r: provd full clone ${P[-1]} s, virt-clone ${V[-1]} s (provd's copy: $cmp_out)"
  purge "p$r"; purge "v$r"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${P[@]}"); mv=$(median "${V[@]}")
echo "FULL median: provd ${mp} s, virt-clone ${mv} s, virt-clone/provd = $(echo "$mv / $mp" | bc -l | xargs printf '%.2f')x"

echo "# linked clones: 1 GiB template vs 50 GiB sparse template"
qemu-img create -q -f qcow2 "$W/images/small_system.qcow2" 1G
qemu-io -f qcow2 -c "write -P 7 0 1G" "$W/images/small_system.qcow2" >/dev/null
qemu-img create -q -f qcow2 "$W/images/big_system.qcow2" 50G
qemu-io -f qcow2 -c "write -P 7 0 64M" "$W/images/big_system.qcow2" >/dev/null
define small "$W/images/small_system.qcow2" 2
define big "$W/images/big_system.qcow2" 3
for t in small big; do
  L=()
  for r in $(seq "$ROUNDS"); do
    t0=$(now); "$PROVD" vm clone "$t" "l$t$r" --linked --connect "$URI" >/dev/null 2>&1; t1=$(now)
    L+=("$(secs "$t0" "$t1")")
  done
  for r in $(seq "$ROUNDS"); do purge "l$t$r"; done
  echo "LINKED $t template ($(qemu-img info --output=json "$W/images/${t}_system.qcow2" | grep -m1 '"virtual-size"' | tr -dc 0-9 | awk '{print $1/2^30}') GiB): ${L[*]} s (median $(median "${L[@]}") s)"
done
