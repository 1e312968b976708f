#!/bin/bash
# The fleet storm: N machines power on at once and walk the whole chain (DHCP as the PXE ROM,
# TFTP of undionly.kpxe, DHCP as iPXE, the per-host script, kernel + initrd, the kickstart
# with its token, the installer's callbacks) against provd, each with its own MAC and leased
# address; then the same static parts (DHCP, TFTP, script, files, a static kickstart)
# against Kea + tftpd-hpa + nginx as the baseline. The simulated machines are
# lab/bench/storm (Rust); every host is generated into provd's site config.
#
#   sudo lab/bench/storm.sh [PROVD] [N] [KERNEL_MB] [INITRD_MB]
#   e.g. sudo lab/bench/storm.sh target/release/provd 5000 4 8
#
# Prints each run's stage percentiles (time from power-on) and the ratio of provd's p99
# time-to-kickstart to the baseline's. Traffic stays inside the namespaces stsrv and stcli
# this script makes and removes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROVD=${1:-target/release/provd}
N=${2:-500}
KERNEL_MB=${3:-4}
INITRD_MB=${4:-8}
SPREAD_MS=${SPREAD_MS:-1000}
BASELINE=${BASELINE:-1}
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
[ -x "$PROVD" ] || { echo "not an executable: $PROVD (cargo build --release)"; exit 1; }
[ "$N" -ge 1 ] && [ "$N" -le 16000 ] || { echo "N is 1 to 16000 (the pool is a /18)"; exit 1; }
for t in kea-dhcp4 nginx /usr/sbin/in.tftpd; do
  command -v $t >/dev/null || [ "$BASELINE" = 0 ] || { echo "missing $t (lab/deps.sh installs it), or BASELINE=0"; exit 1; }
done
CARGO_TARGET_DIR="$PWD/target" cargo build -q --release --manifest-path lab/bench/storm/Cargo.toml
STORM="$PWD/target/release/provd-storm"

WORK=$(mktemp -d /tmp/provd-storm.XXXXXX)
drop_namespaces() {
  for ns in stsrv stcli; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
}
# One L2 segment of N machines: the neighbour table must hold them all. Its limits are the
# kernel's, not a namespace's (gc_thresh3 is 1024 by default; a boot server on a segment
# this big needs the same tuning). Raised for the run and put back as they were.
NEIGH=/proc/sys/net/ipv4/neigh/default
SAVED_NEIGH=$(cat $NEIGH/gc_thresh1 $NEIGH/gc_thresh2 $NEIGH/gc_thresh3)
restore_neigh() { set -- $SAVED_NEIGH; echo "$1" > $NEIGH/gc_thresh1; echo "$2" > $NEIGH/gc_thresh2; echo "$3" > $NEIGH/gc_thresh3; }
cleanup() { drop_namespaces; restore_neigh; rm -rf "$WORK"; }
trap cleanup EXIT
if [ "$(cat $NEIGH/gc_thresh3)" -lt $((4 * N + 1024)) ]; then
  echo $((2 * N + 1024)) > $NEIGH/gc_thresh1; echo $((4 * N + 1024)) > $NEIGH/gc_thresh2; echo $((4 * N + 2048)) > $NEIGH/gc_thresh3
fi
SRV="ip netns exec stsrv"
CLI="ip netns exec stcli"

# Addresses: the server 10.80.0.1, the pool from 10.80.1.0 with room for N and a fifth more.
POOL_SIZE=$((N + N / 5 + 16))
last_of_pool() { local i=$((256 + POOL_SIZE - 1)); echo "10.80.$((i / 256)).$((i % 256))"; }
POOL_END=$(last_of_pool)

fresh_namespaces() {
  drop_namespaces
  ip netns add stsrv; ip netns add stcli
  ip link add stveth-s netns stsrv type veth peer name stveth-c netns stcli
  ip -n stsrv addr add 10.80.0.1/16 dev stveth-s
  ip -n stcli addr add 10.80.0.2/16 dev stveth-c
  # The machines' leased addresses are on the client side before they are leased: the
  # generator binds to what the ACK gave and the server reaches it by ARP.
  for i in $(seq 256 $((256 + POOL_SIZE - 1))); do
    echo "addr add 10.80.$((i / 256)).$((i % 256))/16 dev stveth-c"
  done | ip -n stcli -batch -
  for ns in stsrv stcli; do ip -n $ns link set lo up; done
  ip -n stsrv link set stveth-s up; ip -n stcli link set stveth-c up
  # A machine without an address broadcasts on its one NIC: the limited broadcast needs a
  # route out of the client namespace's only interface.
  ip -n stcli route add 255.255.255.255/32 dev stveth-c
}

# The same files for both runs.
mkdir -p "$WORK/files/el9" "$WORK/state" "$WORK/templates" "$WORK/static"
head -c 70000 /dev/urandom > "$WORK/files/undionly.kpxe"
head -c $((KERNEL_MB * 1024 * 1024)) /dev/urandom > "$WORK/files/el9/vmlinuz"
head -c $((INITRD_MB * 1024 * 1024)) /dev/urandom > "$WORK/files/el9/initrd.img"
cp -r templates/* "$WORK/templates/"

{
  cat <<EOF
[daemon]
state_dir = "$WORK/state"
api_listen = "127.0.0.1:6798"
assets_dir = "$WORK/files"
templates_dir = "$WORK/templates"

[profiles.el9]
os = "el9"
kernel = "el9/vmlinuz"
initrd = "el9/initrd.img"
kickstart = "kickstart/el-generic.ks.j2"
vars = { install_url = "http://10.80.0.1:8080/el9" }

[sites.storm]
server_address = "10.80.0.1"
http_port = 8080
listen = [{ interface = "stveth-s", address = "10.80.0.1" }]

[sites.storm.dhcp]
unknown_clients = "ignore"

[[sites.storm.subnets]]
prefix = "10.80.0.0/16"
lease_time = 3600
pools = [{ start = "10.80.1.0", end = "$POOL_END" }]
EOF
  for i in $(seq 1 "$N"); do
    printf '\n[[sites.storm.hosts]]\nmac = "52:54:01:%02x:%02x:%02x"\nhostname = "m%05d"\nprofile = "el9"\n' \
      $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)) "$i"
  done
} > "$WORK/provd.toml"

# The baseline's static chain: a script naming nginx's files and a static kickstart.
cat > "$WORK/static/boot.ipxe" <<EOF
#!ipxe
kernel http://10.80.0.1:8081/files/el9/vmlinuz initrd=initrd.img inst.ks=http://10.80.0.1:8081/static/ks.cfg
initrd --name initrd.img http://10.80.0.1:8081/files/el9/initrd.img
boot
EOF
printf 'text\nurl --url="http://10.80.0.1:8081/el9"\n%%packages\n@^minimal-environment\n%%end\n' > "$WORK/static/ks.cfg"
chmod -R a+rX "$WORK"
cat > "$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  server { listen 10.80.0.1:8081 backlog=16384; location /files/ { alias $WORK/files/; } location /static/ { alias $WORK/static/; } }
}
EOF
cat > "$WORK/kea4.json" <<EOF
{ "Dhcp4": { "interfaces-config": { "interfaces": [ "stveth-s" ] },
  "lease-database": { "type": "memfile", "persist": true, "name": "$WORK/kea-leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": 3600,
  "multi-threading": { "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 1024 },
  "client-classes": [
    { "name": "ipxe", "test": "option[77].hex == 'iPXE'",
      "boot-file-name": "http://10.80.0.1:8081/static/boot.ipxe" },
    { "name": "rom", "test": "not (option[77].hex == 'iPXE')",
      "next-server": "10.80.0.1", "boot-file-name": "undionly.kpxe" } ],
  "subnet4": [ { "id": 1, "subnet": "10.80.0.0/16", "pools": [ { "pool": "10.80.1.0 - $POOL_END" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$WORK/kea.log" } ], "severity": "WARN" } ] } }
EOF

storm() {  # $1: label
  echo "== $1: $N machines, kernel $KERNEL_MB MiB + initrd $INITRD_MB MiB, started within $SPREAD_MS ms"
  $CLI "$STORM" --machines "$N" --spread-ms "$SPREAD_MS" | tee "$WORK/$1.out"
}
p99_kickstart() { awk '$1 == "kickstart" { print $4 }' "$WORK/$1.out"; }

fresh_namespaces
$SRV "$PROVD" serve --config "$WORK/provd.toml" > "$WORK/provd.log" 2>&1 &
for _ in $(seq 300); do
  $CLI curl -sf -o /dev/null "http://10.80.0.1:8080/assets/undionly.kpxe" --interface 10.80.0.2 2>/dev/null && break
  sleep 0.2
done
storm provd
$SRV kill "$(ip netns pids stsrv | head -1)" 2>/dev/null || true
grep -E "WARN|ERROR" "$WORK/provd.log" | sort | uniq -c | sort -rn | head -5 || true
cp "$WORK/provd.out" /tmp/provd-storm-provd.out

if [ "$BASELINE" = 1 ]; then
  fresh_namespaces
  $SRV /usr/sbin/in.tftpd --listen --foreground --address 10.80.0.1:69 --secure "$WORK/files" &
  disown $!
  $SRV nginx -c "$WORK/nginx.conf"
  KEA_PIDFILE_DIR=$WORK KEA_LOCKFILE_DIR=$WORK $SRV kea-dhcp4 -c "$WORK/kea4.json" > "$WORK/kea.out" 2>&1 &
  sleep 2
  storm baseline
  cp "$WORK/baseline.out" /tmp/provd-storm-baseline.out
  p=$(p99_kickstart provd); b=$(p99_kickstart baseline)
  echo
  if [ -n "$p" ] && [ -n "$b" ]; then
    echo "p99 time-to-kickstart: provd $p s, Kea + tftpd-hpa + nginx $b s: provd/baseline $(echo "scale=2; $p / $b" | bc)"
  else
    echo "p99 time-to-kickstart: not reached by every run (see the failures above)"
  fi
fi
