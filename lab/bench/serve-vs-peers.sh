#!/bin/bash
# provd's file serving against its peers, in one run on the same files and namespaces:
#   HTTP: a kernel-sized file from /assets, wrk -t2 -c16, provd vs nginx (sendfile on);
#         wrk has one source address and provd takes 16 connections per address (a
#         boot-network limit), so -c16 for both; and 500 machines at once (curl from 50
#         addresses, 10 each) fetching the kernel and an initrd
#   TFTP: the same file, one lockstep transfer (no windowsize, as PXE ROMs do) with
#         blksize 512 and 1468, provd vs tftpd-hpa; and 500 parallel small-file transfers
# Order alternates each round; best of ROUNDS per server; ratios printed (>1: provd faster).
#
#   sudo lab/bench/serve-vs-peers.sh [PROVD] [ROUNDS] [MB]
#
# Traffic stays inside two namespaces this script makes (sbsrv, sbcli) and removes.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROVD=${1:-target/release/provd}
ROUNDS=${2:-3}
MB=${3:-14}
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
[ -x "$PROVD" ] || { echo "not an executable: $PROVD (cargo build --release)"; exit 1; }
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/sbin/in.tftpd ] || need+=(tftpd-hpa)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
# Packages start their own daemons on the host: this benchmark runs its own in a namespace.
systemctl stop nginx tftpd-hpa 2>/dev/null || true

WORK=$(mktemp -d /tmp/provd-serve-bench.XXXXXX)
cleanup() {
  for p in $(cat "$WORK"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  ip netns del sbsrv 2>/dev/null || true
  ip netns del sbcli 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del sbsrv 2>/dev/null || true
ip netns del sbcli 2>/dev/null || true
ip netns add sbsrv
ip netns add sbcli
ip link add sbveth-s netns sbsrv type veth peer name sbveth-c netns sbcli
ip -n sbsrv addr add 10.78.0.1/24 dev sbveth-s
ip -n sbcli addr add 10.78.0.2/24 dev sbveth-c
for i in $(seq 10 59); do ip -n sbcli addr add 10.78.0.$i/24 dev sbveth-c; done
for ns in sbsrv sbcli; do ip -n $ns link set lo up; done
ip -n sbsrv link set sbveth-s up
ip -n sbcli link set sbveth-c up
SRV="ip netns exec sbsrv"
CLI="ip netns exec sbcli"

# The same files for everyone.
mkdir -p "$WORK/files/el9" "$WORK/files/fw" "$WORK/state" "$WORK/templates"
head -c $((MB * 1024 * 1024)) /dev/urandom > "$WORK/files/el9/vmlinuz"
head -c 70000 /dev/urandom > "$WORK/files/fw/undionly.kpxe"
head -c $((MB * 4 * 1024 * 1024)) /dev/urandom > "$WORK/files/el9/initrd.img"
chmod -R a+rX "$WORK"
cp -r templates/* "$WORK/templates/"

cat > "$WORK/provd.toml" <<EOF
[daemon]
state_dir = "$WORK/state"
api_listen = "127.0.0.1:6799"
assets_dir = "$WORK/files"
templates_dir = "$WORK/templates"

[sites.bench]
server_address = "10.78.0.1"
http_port = 8080
listen = [{ interface = "sbveth-s", address = "10.78.0.1" }]

[sites.bench.pxe]
tftp_open = ["10.78.0.0/24"]

[[sites.bench.subnets]]
prefix = "10.78.0.0/24"
pools = [{ start = "10.78.0.100", end = "10.78.0.200" }]
EOF
cat > "$WORK/nginx.conf" <<EOF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server { listen 10.78.0.1:8081; location /assets/ { alias $WORK/files/; } }
}
EOF

start_provd() {
  $SRV "$PROVD" serve --config "$WORK/provd.toml" >"$WORK/provd.log" 2>&1 &
  echo $! > "$WORK/provd.pid"
  for _ in $(seq 100); do
    $CLI curl -sf -o /dev/null "http://10.78.0.1:8080/assets/fw/undionly.kpxe" && return 0
    sleep 0.1
  done
  echo "provd did not start:"; cat "$WORK/provd.log"; exit 1
}
stop() { kill "$(cat "$WORK/$1.pid")" 2>/dev/null || true; rm -f "$WORK/$1.pid"; sleep 0.5; }
start_nginx() { $SRV nginx -c "$WORK/nginx.conf"; sleep 0.3; }
stop_nginx() { $SRV nginx -c "$WORK/nginx.conf" -s stop 2>/dev/null || true; sleep 0.3; }
start_tftpd() {
  $SRV /usr/sbin/in.tftpd --listen --foreground --address 10.78.0.1:69 --secure "$WORK/files" &
  echo $! > "$WORK/tftpd.pid"; sleep 0.3
}

# wrk's transfer rate in MB/s.
http_rate() {
  $CLI wrk -t2 -c16 -d8s "http://10.78.0.1:$1/assets/el9/vmlinuz" |
    awk '/Transfer\/sec/ {v=$2; u=substr(v, length(v)-1); n=v+0; if (u=="GB") n*=1024; if (u=="KB") n/=1024; print n}'
}
# Seconds for 500 machines (50 addresses x 10) each fetching the kernel, then the initrd.
http_fleet() {
  local t0 t1
  t0=$(date +%s.%N)
  for a in $(seq 10 59); do
    for _ in $(seq 10); do
      $CLI curl -sf -o /dev/null -o /dev/null --interface "10.78.0.$a" \
        "http://10.78.0.1:$1/assets/el9/vmlinuz" "http://10.78.0.1:$1/assets/el9/initrd.img" || echo "fleet fetch failed" >&2 &
    done
  done
  wait
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}
# Seconds for one lockstep transfer of the kernel.
tftp_time() {
  $CLI curl -s -o /dev/null --tftp-blksize "$1" -w '%{time_total}' "tftp://10.78.0.1/el9/vmlinuz"
}
# Seconds for 500 transfers of the small file at once.
tftp_parallel() {
  local t0 t1
  t0=$(date +%s.%N)
  for i in $(seq 500); do
    $CLI curl -s -o /dev/null --tftp-blksize 1468 "tftp://10.78.0.1/fw/undionly.kpxe" &
  done
  wait
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

best_max() { printf '%s\n' "$@" | sort -g | tail -1; }
best_min() { printf '%s\n' "$@" | sort -g | head -1; }
declare -a H_P H_N F_P F_N T512_P T512_T T1468_P T1468_T PAR_P PAR_T
for round in $(seq 1 "$ROUNDS"); do
  order="provd peer"; [ $((round % 2)) = 0 ] && order="peer provd"
  for who in $order; do
    if [ $who = provd ]; then
      start_provd
      H_P+=("$(http_rate 8080)")
      F_P+=("$(http_fleet 8080)")
      T512_P+=("$(tftp_time 512)")
      T1468_P+=("$(tftp_time 1468)")
      PAR_P+=("$(tftp_parallel)")
      stop provd
    else
      start_nginx
      H_N+=("$(http_rate 8081)")
      F_N+=("$(http_fleet 8081)")
      stop_nginx
      start_tftpd
      T512_T+=("$(tftp_time 512)")
      T1468_T+=("$(tftp_time 1468)")
      PAR_T+=("$(tftp_parallel)")
      stop tftpd
    fi
    echo "round $round $who done" >&2
  done
done

echo
echo "serve-vs-peers: $MB MiB file, best of $ROUNDS, $(nproc) cores, $(date -u +%F)"
printf '%-34s %12s %12s %8s\n' test provd peer ratio
row() { printf '%-34s %12s %12s %8s\n' "$1" "$2" "$3" "$4"; }
hp=$(best_max "${H_P[@]}"); hn=$(best_max "${H_N[@]}")
row "HTTP wrk -t2 -c16 MB/s (nginx)" "$hp" "$hn" "$(echo "scale=2; $hp / $hn" | bc)"
fp=$(best_min "${F_P[@]}"); fn=$(best_min "${F_N[@]}")
row "HTTP 500 machines kernel+initrd s" "$fp" "$fn" "$(echo "scale=2; $fn / $fp" | bc)"
for b in 512 1468; do
  eval "p=\$(best_min \"\${T${b}_P[@]}\"); t=\$(best_min \"\${T${b}_T[@]}\")"
  row "TFTP lockstep blksize $b s (tftpd-hpa)" "$p" "$t" "$(echo "scale=2; $t / $p" | bc)"
done
pp=$(best_min "${PAR_P[@]}"); pt=$(best_min "${PAR_T[@]}")
row "TFTP 500 parallel 70 kB s (tftpd-hpa)" "$pp" "$pt" "$(echo "scale=2; $pt / $pp" | bc)"
echo "every run: HTTP provd ${H_P[*]} nginx ${H_N[*]}; 500 machines provd ${F_P[*]} nginx ${F_N[*]}"
echo "           TFTP 512 provd ${T512_P[*]} tftpd ${T512_T[*]}; 1468 provd ${T1468_P[*]} tftpd ${T1468_T[*]}"
echo "           500 parallel provd ${PAR_P[*]} tftpd ${PAR_T[*]}"
