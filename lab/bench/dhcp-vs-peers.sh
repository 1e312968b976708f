#!/bin/bash
# DHCP throughput: provd vs Kea 2.2 (memfile, multi-threaded) vs ISC dhcpd, same machine,
# same run, a fresh server (and fresh lease state) for every measurement.
#
#   sudo lab/bench/dhcp-vs-peers.sh [RATES] [SECONDS]
#   e.g. sudo lab/bench/dhcp-vs-peers.sh "250 500 750 1000 2000 4000 6000 8000 10000 12000 14000" 5
#
# Topology (the one ../shared/peers/dhcp-peers.sh uses): namespace bsrv holds the server on
# veth bveth-s 10.77.0.1/16; namespace bcli runs perfdhcp as a relay from 10.77.0.2. Every
# DORA ends in a durable lease for provd (ACK after fsync), Kea (memfile persist) and ISC.
#
# For each server the rate ladder is climbed until the ACK loss exceeds 2.5%; the highest
# rate held is reported with the ratio to Kea. Afterwards provd's resident memory is read
# after 60,000 leases. Only namespaces this script creates are touched.
set -u
RATES=${1:-"250 500 750 1000 2000 4000 6000 8000 10000 12000 14000"}
SECS=${2:-5}
SERVERS=${SERVERS:-"provd kea iscd"}   # a subset for A/B runs (provd-ab.sh)
MEMORY=${MEMORY:-1}                   # 0: skip the 60,000-lease memory reading
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROVD=${PROVD:-$ROOT/target/release/provd}
W=/tmp/provd-bench
LOGS=/tmp/provd-bench-logs   # every run's server log and perfdhcp output, for diagnosis
POOL=65279   # 10.77.1.0 - 10.77.255.254

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
for t in perfdhcp kea-dhcp4 dhcpd ip; do command -v $t >/dev/null || { echo "missing $t (see .ci/run for packages)"; exit 1; }; done
[ -x "$PROVD" ] || (cd "$ROOT" && cargo build --release -q) || exit 1

. "$HERE/dhcp-servers.sh"   # cleanup, setup, start_server
trap cleanup EXIT

# One measurement: fresh namespaces, fresh server, perfdhcp at RATE for SECS.
# Prints "discovers acks".
measure() {  # $1 server, $2 rate, $3 secs
  setup; start_server $1
  ip netns exec bcli timeout $(($3 + 20)) perfdhcp -4 -r $2 -R 1000000 -p $3 -l 10.77.0.2 10.77.0.1 > $W/perf.txt 2>&1
  local disc acks
  disc=$(grep -A1 'DISCOVER-OFFER' $W/perf.txt | awk '/sent packets/ {print $3}')
  acks=$(grep -A2 'REQUEST-ACK' $W/perf.txt | awk '/received packets/ {print $3}')
  echo "${disc:-0} ${acks:-0}"
  mkdir -p $LOGS; cp $W/srv.log $LOGS/$1-$2.srv.log; cp $W/perf.txt $LOGS/$1-$2.perf.txt
  [ -f $W/kea.log ] && cp $W/kea.log $LOGS/$1-$2.kea.log
  cleanup
}

declare -A BEST
printf '%-6s %7s %5s %10s %8s %8s %s\n' server rate secs discovers acks loss% held
rm -rf $LOGS
for s in $SERVERS; do
  BEST[$s]=0
  for r in $RATES; do
    secs=$SECS
    # Keep every run inside the pool so exhaustion is never mistaken for a server limit.
    while [ $((r * secs)) -gt $((POOL * 9 / 10)) ] && [ $secs -gt 1 ]; do secs=$((secs - 1)); done
    read disc acks < <(measure $s $r $secs)
    expected=$disc   # perfdhcp "drops": DISCOVERs sent that never became an ACK
    loss=$(awk -v a=$acks -v e=$expected 'BEGIN { printf "%.2f", (e > 0 ? 100 * (e - a) / e : 100) }')
    held=$(awk -v l=$loss 'BEGIN { print (l < 2.5) ? "yes" : "no" }')
    printf '%-6s %7s %5s %10s %8s %8s %s\n' $s $r $secs $disc $acks $loss $held
    if [ $held = yes ]; then BEST[$s]=$r; else break; fi
  done
done

echo
echo "highest rate held with < 2.5% ACK loss (DORA/s):"
for s in $SERVERS; do echo "  $s ${BEST[$s]}"; done
ratio() { awk -v a=$1 -v b=$2 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
echo "  provd/kea  $(ratio ${BEST[provd]:-0} ${BEST[kea]:-0})"
echo "  provd/iscd $(ratio ${BEST[provd]:-0} ${BEST[iscd]:-0})"
[ "$MEMORY" = 1 ] || exit 0

# Resident memory after 60,000 leases.
setup; start_server provd
ip netns exec bcli timeout 60 perfdhcp -4 -r 5000 -R 1000000 -n 60000 -p 20 -l 10.77.0.2 10.77.0.1 > $W/perf60k.txt 2>&1
PID=$(ip netns pids bsrv | head -1)
bound=$(ip netns exec bsrv "$PROVD" stats --json --config $W/bench.toml 2>/dev/null | awk -F: '/leases_bound/ {gsub(/[ ,]/, "", $2); print $2}')
rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
echo
echo "provd resident memory after ${bound:-?} bound leases: $((rss / 1024)) MiB ($rss KiB)"
