#!/bin/bash
# provd before vs after a change, in one run: the single server's DHCP throughput
# (dhcp-vs-peers.sh, relayed perfdhcp) and the failover pair's (failover-pair.sh), each
# binary in turn, rounds alternated so machine drift hits both alike.
#
#   sudo lab/bench/provd-ab.sh BEFORE AFTER ["SINGLE_RATES"] ["PAIR_RATES"] [ROUNDS]
#   e.g. git worktree add /tmp/before <rev> && cargo build --release --target-dir /tmp/bt \
#          --manifest-path /tmp/before/Cargo.toml
#        sudo lab/bench/provd-ab.sh /tmp/bt/release/provd target/release/provd
#
# Prints every ladder, then per binary and round the highest rate held (< 2.5% loss).
set -u
BEFORE=$1
AFTER=$2
SINGLE_RATES=${3:-"8000 10000 12000 14000 16000"}
PAIR_RATES=${4:-"4000 6000 8000 10000 12000"}
ROUNDS=${5:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
for b in "$BEFORE" "$AFTER"; do [ -x "$b" ] || { echo "not an executable: $b"; exit 1; }; done

held() { awk '/highest rate held/ {f=1; next} f && $1 == "'"$1"'" {print $2; exit}'; }
declare -a ROWS
for round in $(seq 1 "$ROUNDS"); do
  for which in before after; do
    bin=$BEFORE; [ $which = after ] && bin=$AFTER
    echo "== round $round, $which ($bin): single server"
    single=$(PROVD=$bin SERVERS=provd MEMORY=0 "$HERE/dhcp-vs-peers.sh" "$SINGLE_RATES" 4 | tee >(cat >&2) | held provd)
    echo "== round $round, $which ($bin): failover pair"
    pair=$(PROVD=$bin SETUPS=provd-pair "$HERE/failover-pair.sh" "$PAIR_RATES" 3 | tee >(cat >&2) | held provd-pair)
    ROWS+=("$(printf '%-6s %5s %12s %12s' $which $round "${single:-0}" "${pair:-0}")")
  done
done
echo
printf '%-6s %5s %12s %12s\n' binary round single_DORA/s pair_DORA/s
printf '%s\n' "${ROWS[@]}"
