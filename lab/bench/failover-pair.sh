#!/bin/bash
# DHCP failover throughput: a provd pair vs a single provd vs an ISC dhcpd pair, same
# machine, same run, fresh servers and fresh lease state for every measurement.
#
#   sudo lab/bench/failover-pair.sh ["RATES"] [SECONDS]
#   e.g. sudo lab/bench/failover-pair.sh "500 1000 2000 4000 6000 8000" 3
#
# Topology: namespaces fa (10.78.0.1) and fb (10.78.0.2) hold the two servers, fc
# (10.78.0.3) runs perfdhcp in direct mode (-l fc: broadcast, so both servers hear every
# DISCOVER and each answers its load-balancing share), all on bridge fbr0 in namespace fbr.
# Pool: 10.78.1.0 - 10.78.255.254 (65,279 addresses); every run stays inside 90% of it.
# A pair is measured once it is NORMAL and the primary has finished balancing the pool.
# For each setup the rate ladder is climbed until ACK loss exceeds 2.5%; the highest rate
# held is reported, with the ratios. Only namespaces this script creates are touched.
set -u
RATES=${1:-"500 1000 2000 4000 6000 8000 10000 12000"}
SECS=${2:-3}
SETUPS=${SETUPS:-"provd-single provd-pair isc-pair"}   # a subset for A/B runs (provd-ab.sh)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROVD=${PROVD:-$ROOT/target/release/provd}
W=/tmp/provd-bench-fo
LOGS=/tmp/provd-bench-fo-logs
POOL=65279

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
for t in perfdhcp dhcpd ip curl; do command -v $t >/dev/null || { echo "missing $t (lab/deps.sh installs it)"; exit 1; }; done
[ -x "$PROVD" ] || (cd "$ROOT" && cargo build --release -q) || exit 1

NSS="fbr fa fb fc"
cleanup() {
  for ns in $NSS; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null; done
    ip netns del $ns 2>/dev/null
  done
}
trap cleanup EXIT

setup() {
  cleanup
  rm -rf $W; mkdir -p $W/a $W/b
  for ns in $NSS; do ip netns add $ns; ip -n $ns link set lo up; done
  ip -n fbr link add fbr0 type bridge; ip -n fbr link set fbr0 up
  local i=1
  for h in a b c; do
    ip -n f$h link add f$h type veth peer name p$h netns fbr
    ip -n f$h addr add 10.78.0.$i/16 dev f$h; ip -n f$h link set f$h up
    ip -n fbr link set p$h master fbr0; ip -n fbr link set p$h up
    i=$((i + 1))
  done
}

provd_conf() {  # $1 = a|b, $2 = primary|secondary|none
  local me=1 peer=2 ifc=fa
  [ $1 = b ] && { me=2; peer=1; ifc=fb; }
  mkdir -p $W/assets
  cat > $W/$1/provd.toml <<EOT
[daemon]
state_dir = "$W/$1/state"
templates_dir = "$ROOT/templates"
assets_dir = "$W/assets"
api_listen = "127.0.0.1:6767"
[sites.fo]
server_address = "10.78.0.$me"
listen = [{ interface = "$ifc", address = "10.78.0.$me" }]
dhcp = { unknown_clients = "lease-only", relays = ["10.78.0.3"] }   # perfdhcp sets giaddr
[[sites.fo.subnets]]
prefix = "10.78.0.0/16"
lease_time = 4000
pools = [{ start = "10.78.1.0", end = "10.78.255.254" }]
EOT
  if [ $2 != none ]; then
    cat >> $W/$1/provd.toml <<EOT
[sites.fo.failover]
name = "fo"
role = "$2"
address = "10.78.0.$me"
peer_address = "10.78.0.$peer"
max_response_delay = 30
max_unacked_updates = 10
load_balance_max_seconds = 3
EOT
    [ $2 = primary ] && printf 'mclt = 3600\nsplit = 128\n' >> $W/$1/provd.toml
  fi
}

isc_conf() {  # $1 = a|b, $2 = primary|secondary
  local me=1 peer=2
  [ $1 = b ] && { me=2; peer=1; }
  local extra=""
  [ $2 = primary ] && extra="mclt 3600; split 128;"
  cat > $W/$1/dhcpd.conf <<EOT
authoritative; ddns-update-style none; ping-check false;
default-lease-time 4000; max-lease-time 4000;
failover peer "fo" { $2; address 10.78.0.$me; port 647; peer address 10.78.0.$peer; peer port 647;
  max-response-delay 30; max-unacked-updates 10; load balance max seconds 3; $extra }
subnet 10.78.0.0 netmask 255.255.0.0 { pool { failover peer "fo"; range 10.78.1.0 10.78.255.254; } }
EOT
  touch $W/$1/dhcpd.leases
}

provd_api() {  # $1 = a|b; the admin API token is in the server's state directory
  local auth=()
  [ -f $W/$1/state/api-token ] && auth=(-H "Authorization: Bearer $(cat $W/$1/state/api-token)")
  ip netns exec f$1 curl -s --max-time 2 "${auth[@]}" http://127.0.0.1:6767/api/failover
}

start() {  # $1 = provd-single | provd-pair | isc-pair
  case $1 in
  provd-single)
    provd_conf a none
    ip netns exec fa "$PROVD" serve --config $W/a/provd.toml > $W/a/srv.log 2>&1 &
    disown $!; sleep 1 ;;
  provd-pair)
    provd_conf a primary; provd_conf b secondary
    ip netns exec fa "$PROVD" serve --config $W/a/provd.toml > $W/a/srv.log 2>&1 & disown $!
    ip netns exec fb "$PROVD" serve --config $W/b/provd.toml > $W/b/srv.log 2>&1 & disown $!
    # NORMAL on both, then the primary's pool balancing (32k BNDUPDs) drained.
    for _ in $(seq 600); do
      a=$(provd_api a); b=$(provd_api b)
      if echo "$a" | grep -q '"state":"normal"' && echo "$b" | grep -q '"state":"normal"' \
         && echo "$a" | grep -q '"unacked_updates":0,"queued_updates":0' \
         && [ "$(grep -c 'balanced pools' $W/a/srv.log)" -gt 0 ]; then break; fi
      sleep 0.5
    done ;;
  isc-pair)
    isc_conf a primary; isc_conf b secondary
    ip netns exec fa dhcpd -4 -f -d -cf $W/a/dhcpd.conf -lf $W/a/dhcpd.leases -pf $W/a/pid fa > $W/a/srv.log 2>&1 & disown $!
    ip netns exec fb dhcpd -4 -f -d -cf $W/b/dhcpd.conf -lf $W/b/dhcpd.leases -pf $W/b/pid fb > $W/b/srv.log 2>&1 & disown $!
    # NORMAL on both, then the primary's balancing finished (backup leases stop moving).
    for _ in $(seq 1200); do
      if grep -q 'Both servers normal' $W/a/srv.log && grep -q 'Both servers normal' $W/b/srv.log \
         && grep -q 'balanced pool.*lts 0' $W/a/srv.log; then break; fi
      sleep 0.5
    done
    sleep 2 ;;
  esac
}

# One measurement. Prints "discovers acks ready_seconds".
measure() {  # $1 setup, $2 rate, $3 secs
  setup
  local t0=$(date +%s.%N)
  start $1
  local ready=$(echo "$(date +%s.%N) - $t0" | bc -l | xargs printf '%.1f')
  ip netns exec fc timeout $(($3 + 20)) perfdhcp -4 -l fc -r $2 -R 1000000 -p $3 > $W/perf.txt 2>&1
  local disc acks
  disc=$(grep -A1 'DISCOVER-OFFER' $W/perf.txt | awk '/sent packets/ {print $3}')
  acks=$(grep -A2 'REQUEST-ACK' $W/perf.txt | awk '/received packets/ {print $3}')
  echo "${disc:-0} ${acks:-0} $ready"
  mkdir -p $LOGS
  cp $W/perf.txt $LOGS/$1-$2.perf.txt
  for h in a b; do [ -f $W/$h/srv.log ] && cp $W/$h/srv.log $LOGS/$1-$2.$h.log; done
  cleanup
}

declare -A BEST
rm -rf $LOGS
printf '%-13s %7s %5s %10s %8s %7s %s %s\n' setup rate secs discovers acks loss% held ready_s
for s in $SETUPS; do
  BEST[$s]=0
  for r in $RATES; do
    secs=$SECS
    while [ $((r * secs)) -gt $((POOL * 9 / 10)) ] && [ $secs -gt 1 ]; do secs=$((secs - 1)); done
    read disc acks ready < <(measure $s $r $secs)
    loss=$(awk -v a=$acks -v e=$disc 'BEGIN { printf "%.2f", (e > 0 ? 100 * (e - a) / e : 100) }')
    held=$(awk -v l=$loss 'BEGIN { print (l < 2.5) ? "yes" : "no" }')
    printf '%-13s %7s %5s %10s %8s %7s %s %s\n' $s $r $secs $disc $acks $loss $held $ready
    if [ $held = yes ]; then BEST[$s]=$r; else break; fi
  done
done

echo
echo "highest rate held with < 2.5% ACK loss (DORA/s):"
for s in $SETUPS; do echo "  $s ${BEST[$s]}"; done
ratio() { awk -v a=$1 -v b=$2 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; }
echo "  provd-pair / isc-pair      $(ratio ${BEST[provd-pair]:-0} ${BEST[isc-pair]:-0})"
echo "  provd-pair / provd-single  $(ratio ${BEST[provd-pair]:-0} ${BEST[provd-single]:-0})"
