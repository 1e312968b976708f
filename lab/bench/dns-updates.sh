#!/bin/bash
# Naming N hosts in a real BIND 9 (RFC 2136, TSIG hmac-sha256): provd's DNS updater (one
# signed update per zone per host, each answer's TSIG checked, each accepted name fsynced
# into the store before the next) against nsupdate sending the same updates (the same
# delete-then-add per name, one `send` per host and zone) to a fresh copy of the zones.
# Everything runs in a private network namespace (named on its loopback). Prints wall
# times, the ratio, and checks with dig that both left the same N A and N PTR records.
#
#   sudo lab/bench/dns-updates.sh [N]        (default 500)
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespace)"; exit 1; }
N=${1:-500}
[ "$N" -le 60000 ] || { echo "N at most 60000"; exit 1; }
NS=provd-dnsbench
W=$(mktemp -d /tmp/provd-dnsbench.XXXXXX)
cargo build --release -q
PROVD=$PWD/target/release/provd
cleanup() {
  for p in $(ip netns pids $NS 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del $NS 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
}
trap cleanup EXIT
ip netns add $NS
ip -n $NS link set lo up
ip -n $NS link add db0 type veth peer name db1
ip -n $NS link set db1 up
ip -n $NS addr add 10.250.0.1/24 dev db0
ip -n $NS link set db0 up
in_ns() { ip netns exec $NS "$@"; }

tsig-keygen -a hmac-sha256 provd-bench > "$W/key" && chmod 600 "$W/key"
zones() {
  rm -rf "$W/bind" && mkdir -p "$W/bind"
  for z in a.bench 251.10.in-addr.arpa; do
    printf '$TTL 60\n@ IN SOA ns.a.bench. admin.a.bench. 1 60 60 600 60\n@ IN NS ns.a.bench.\n' > "$W/bind/$z.db"
  done
  echo "ns IN A 127.0.0.1" >> "$W/bind/a.bench.db"
  cat > "$W/bind/named.conf" <<CONF
include "$W/key";
controls { };
options { directory "$W/bind"; listen-on port 53 { 127.0.0.1; }; listen-on-v6 { none; };
  pid-file none; recursion no; dnssec-validation no; };
zone "a.bench" { type primary; file "a.bench.db"; allow-update { key "provd-bench"; }; };
zone "251.10.in-addr.arpa" { type primary; file "251.10.in-addr.arpa.db"; allow-update { key "provd-bench"; }; };
CONF
  in_ns named -g -4 -c "$W/bind/named.conf" > "$W/bind/named.log" 2>&1 &
  NAMED=$!
  for _ in $(seq 100); do in_ns dig @127.0.0.1 +short +time=1 +tries=1 a.bench SOA 2>/dev/null | grep -q ns && return; sleep 0.1; done
  echo "named did not start"; cat "$W/bind/named.log"; exit 1
}
count() { # A and PTR records named holds (AXFR is refused; ask each name)
  local a=0 p=0
  for i in $(seq 1 "$N"); do
    ip="10.251.$((i / 250)).$((i % 250 + 1))"
    [ -n "$(in_ns dig @127.0.0.1 +short h$i.a.bench A)" ] && a=$((a + 1))
    rev="$((i % 250 + 1)).$((i / 250)).251.10.in-addr.arpa"
    [ -n "$(in_ns dig @127.0.0.1 +short "$rev" PTR)" ] && p=$((p + 1))
  done
  echo "$a $p"
}

# provd: N reserved hosts; time from its start until the queue is empty.
mkdir -p "$W/assets" "$W/conf"
{
  cat <<TOML
[daemon]
state_dir = "$W/state"
templates_dir = "$PWD/templates"
assets_dir = "$W/assets"
api_listen = "127.0.0.1:6767"

[sites.b]
server_address = "10.250.0.1"
listen = [{ interface = "db0", address = "10.250.0.1" }]
[[sites.b.subnets]]
prefix = "10.250.0.0/24"
domain = "a.bench"
pools = [{ start = "10.250.0.100", end = "10.250.0.200" }]
[[sites.b.subnets]]
prefix = "10.251.0.0/16"
[sites.b.dns]
server = "127.0.0.1"
reverse_zones = ["251.10.in-addr.arpa"]
key_file = "$W/key"
TOML
  for i in $(seq 1 "$N"); do
    printf '[[sites.b.hosts]]\nmac = "52:54:00:fb:%02x:%02x"\nhostname = "h%d"\nip = "10.251.%d.%d"\n' \
      $((i / 256)) $((i % 256)) "$i" $((i / 250)) $((i % 250 + 1))
  done
} > "$W/conf/site.toml"
zones
start=$(date +%s.%N)
in_ns "$PROVD" serve --config "$W/conf" > "$W/provd.log" 2>&1 &
up=""
for _ in $(seq 6000); do
  out=$(in_ns "$PROVD" dns --json --config "$W/conf" 2>/dev/null || true)
  [ -z "$up" ] && [ -n "$out" ] && up=$(echo "$(date +%s.%N) - $start" | bc)
  names=$(echo "$out" | python3 -c 'import json,sys
try: v=json.load(sys.stdin)["sites"]["b"]; print(v["names"] if not v["pending"] else -1)
except Exception: print(-1)')
  [ "$names" = "$N" ] && break
  sleep 0.05
done
provd_s=$(echo "$(date +%s.%N) - $start" | bc)
[ "$names" = "$N" ] || { echo "provd did not converge"; tail "$W/provd.log"; exit 1; }
read -r pa pp < <(count)
for p in $(ip netns pids $NS); do kill -9 "$p" 2>/dev/null || true; done
sleep 0.5

# nsupdate: the same changes to fresh zones, one send per host and zone.
zones
{
  echo "server 127.0.0.1"
  for i in $(seq 1 "$N"); do
    ip="10.251.$((i / 250)).$((i % 250 + 1))"
    rev="$((i % 250 + 1)).$((i / 250)).251.10.in-addr.arpa"
    printf 'zone a.bench\nupdate delete h%d.a.bench A\nupdate add h%d.a.bench 300 A %s\nsend\n' "$i" "$i" "$ip"
    printf 'zone 251.10.in-addr.arpa\nupdate delete %s PTR\nupdate add %s 300 PTR h%d.a.bench.\nsend\n' "$rev" "$rev" "$i"
  done
} > "$W/nsupdate.txt"
start=$(date +%s.%N)
in_ns nsupdate -k "$W/key" "$W/nsupdate.txt"
ns_s=$(echo "$(date +%s.%N) - $start" | bc)
read -r na np < <(count)

printf '%-10s %8s %8s %8s\n' who seconds A PTR
printf '%-10s %8.2f %8d %8d\n' provd "$provd_s" "$pa" "$pp" nsupdate "$ns_s" "$na" "$np"
# The updater's own account of the round (from its first update to the last answer).
round=$(grep -o "change(s) accepted by [^ ]* in [0-9.]* s" "$W/provd.log" | head -1 | awk '{print $(NF-1)}')
echo "provd's round alone: ${round} s (its start, until its API answered: ${up} s)"
echo "ratio nsupdate/provd: $(echo "scale=2; $ns_s / $provd_s" | bc) (start included), $(echo "scale=2; $ns_s / $round" | bc) (the round alone)"
[ "$pa" = "$N" ] && [ "$pp" = "$N" ] && [ "$na" = "$N" ] && [ "$np" = "$N" ] || { echo "record counts differ"; exit 1; }
