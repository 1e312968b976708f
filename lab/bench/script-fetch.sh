#!/bin/bash
# Per-host boot scripts: requests/s of provd's rendered `/boot/<mac>.ipxe` (one or more
# provd binaries, e.g. before and after a change) against nginx serving the same text as
# a static file, on loopback, same wrk load, order alternating per round, best of ROUNDS.
#
#   sudo lab/bench/script-fetch.sh [ROUNDS] PROVD...
#   e.g. sudo lab/bench/script-fetch.sh 3 /tmp/provd-before target/release/provd
#
# The host is configured at 127.0.0.1 (its reservation), so wrk, whose connections come
# from 127.0.0.1, asks as that host; 8 connections (under the boot listener's 16 per
# address). Uses ports 8181 (provd boot HTTP), 8182 (nginx), 6768 (provd API) and
# 127.0.0.1:67 for provd's DHCP socket on lo: nothing else is touched.
set -u
ROUNDS=${1:-3}
shift
[ $# -ge 1 ] || { echo "usage: $0 [ROUNDS] PROVD..."; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=/tmp/provd-script-fetch
URL_PATH=/boot/52-54-00-00-99-01.ipxe
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "missing $t (lab/deps.sh)"; exit 1; }; done

rm -rf $W; mkdir -p $W/assets $W/state $W/www/boot
cat > $W/provd.toml <<EOF
[daemon]
state_dir = "$W/state"
api_listen = "127.0.0.1:6768"
templates_dir = "$ROOT/templates"
assets_dir = "$W/assets"

[profiles.el9]
os = "el9"
kernel = "el9/vmlinuz"
initrd = "el9/initrd.img"
kickstart = "kickstart/el9-kvm.ks.j2"

[sites.sf]
server_address = "127.0.0.1"
http_port = 8181
listen = [{ interface = "lo", address = "127.0.0.1" }]

[[sites.sf.subnets]]
prefix = "127.0.0.0/8"
pools = [{ start = "127.0.0.100", end = "127.0.0.200" }]

[[sites.sf.hosts]]
mac = "52:54:00:00:99:01"
hostname = "sf1"
ip = "127.0.0.1"
profile = "el9"
state = "installed"
EOF
cat > $W/nginx.conf <<EOF
worker_processes 2;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:8182; root $W/www; }
}
EOF

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill $p 2>/dev/null; done; [ -f $W/nginx.pid ] && kill $(cat $W/nginx.pid) 2>/dev/null; }
trap cleanup EXIT

wait_for() { for _ in $(seq 50); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1"; return 1; }
rate() { wrk -t1 -c8 -d5s "$1" 2>&1 | awk '/Requests\/sec/ {printf "%d", $2} /Non-2xx/ {print " NON-2XX"; exit 1}'; }

# nginx's copy of the script: the text provd renders, byte for byte.
"$1" serve --config $W/provd.toml > $W/provd-0.log 2>&1 & PIDS+=($!)
wait_for http://127.0.0.1:8181$URL_PATH || exit 1
curl -s -o $W/www$URL_PATH http://127.0.0.1:8181$URL_PATH
kill ${PIDS[-1]}; wait ${PIDS[-1]} 2>/dev/null
nginx -c $W/nginx.conf || exit 1

declare -A BEST
names=(nginx "$@")
for r in $(seq $ROUNDS); do
  # Alternate: forward in odd rounds, backward in even ones.
  order=("${names[@]}"); [ $((r % 2)) = 0 ] && order=($(printf '%s\n' "${names[@]}" | tac))
  for n in "${order[@]}"; do
    if [ "$n" = nginx ]; then
      v=$(rate http://127.0.0.1:8182$URL_PATH)
    else
      rm -rf $W/state/*
      "$n" serve --config $W/provd.toml > $W/provd.log 2>&1 & P=$!
      wait_for http://127.0.0.1:8181$URL_PATH || exit 1
      v=$(rate http://127.0.0.1:8181$URL_PATH)
      kill $P; wait $P 2>/dev/null
    fi
    echo "round $r  $n  $v req/s"
    [ "${v%% *}" -gt "${BEST[$n]:-0}" ] 2>/dev/null && BEST[$n]=${v%% *}
  done
done
echo
echo "best of $ROUNDS (req/s), ratio to nginx:"
for n in "${names[@]}"; do
  awk -v n="$n" -v v=${BEST[$n]:-0} -v g=${BEST[nginx]:-0} 'BEGIN { printf "  %-40s %8d  %.2fx\n", n, v, (g > 0 ? v / g : 0) }'
done
