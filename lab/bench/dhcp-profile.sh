#!/bin/bash
# Where a DHCP server's time goes at a fixed perfdhcp rate: whole-machine CPU by owner
# (server, perfdhcp, kernel softirq, idle) and, for provd, a perf profile of its threads.
#
#   sudo lab/bench/dhcp-profile.sh [SERVER] [RATE] [SECONDS]
#   e.g. sudo lab/bench/dhcp-profile.sh provd 12000 5
#        sudo lab/bench/dhcp-profile.sh kea 12000 5
#
# SERVER is provd (the `profiling` build: release with line tables, built if missing) or
# kea. The topology is dhcp-vs-peers.sh's (namespaces bsrv/bcli, perfdhcp relaying from
# 10.77.0.2); only namespaces this script creates are touched. Output under
# /tmp/provd-profile: cpu.txt (the split), perf.txt (perfdhcp's report), and for provd
# report.txt (self time by symbol) and callers.txt (inclusive time by symbol); PROFILE=0
# skips perf (for A/B runs of CPU per ACK, which perf's sampling would inflate).
set -u
SERVER=${1:-provd}
RATE=${2:-12000}
SECS=${3:-5}
POOL=65279   # bench.toml's pool: stay inside 90% of it, or exhaustion looks like a limit
while [ $((RATE * SECS)) -gt $((POOL * 9 / 10)) ] && [ $SECS -gt 2 ]; do SECS=$((SECS - 1)); done
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROVD=${PROVD:-$ROOT/target/profiling/provd}
W=/tmp/provd-bench
OUT=/tmp/provd-profile

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
for t in perfdhcp perf ip; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
if [ "$SERVER" = provd ] && [ ! -x "$PROVD" ]; then
  (cd "$ROOT" && cargo build --profile profiling -q) || exit 1
fi

. "$HERE/dhcp-servers.sh"   # cleanup, setup, start_server
trap cleanup EXIT
case $SERVER in provd|kea) ;; *) echo "SERVER is provd or kea"; exit 1 ;; esac
setup
rm -rf $OUT; mkdir -p $OUT
start_server $SERVER
SPID=$(ip netns pids bsrv | head -1)

# Jiffies: the whole machine (user, system, softirq, idle) and each process (user + system).
machine() { awk '/^cpu / {print $2+$3, $4, $7+$8, $5+$6}' /proc/stat; }
proc_ticks() { awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0; }

read m_user0 m_sys0 m_irq0 m_idle0 < <(machine)
s0=$(proc_ticks $SPID)
if [ "$SERVER" = provd ] && [ "${PROFILE:-1}" = 1 ]; then
  perf record -F 997 --call-graph dwarf,32768 -p $SPID -o $OUT/perf.data -- sleep $SECS > $OUT/record.log 2>&1 &
  PERF=$!
fi
ip netns exec bcli timeout $((SECS + 20)) perfdhcp -4 -r $RATE -R 1000000 -p $SECS -l 10.77.0.2 10.77.0.1 > $OUT/perf.txt 2>&1 &
CLIENT=$!
sleep 0.5
CPID=$(pgrep -n -x perfdhcp)
c0=$(proc_ticks $CPID)
sleep $((SECS - 1))
c1=$(proc_ticks $CPID)
wait $CLIENT
s1=$(proc_ticks $SPID)
read m_user1 m_sys1 m_irq1 m_idle1 < <(machine)
[ -n "${PERF:-}" ] && wait $PERF
# Where the unanswered ones went: each namespace's UDP receive-buffer drops (a server
# that does not keep up drops in bsrv; a perfdhcp that does not, in bcli), and provd's own
# counters.
rcvbuf_drops() { ip netns exec $1 awk '/^Udp:/ && $2 ~ /^[0-9]/ {print $6}' /proc/net/snmp; }
server_drops=$(rcvbuf_drops bsrv); client_drops=$(rcvbuf_drops bcli)
if [ "$SERVER" = provd ]; then
  ip netns exec bsrv "$PROVD" stats --json --config $W/bench.toml > $OUT/stats.json 2>&1
fi
total=$(( (m_user1 - m_user0) + (m_sys1 - m_sys0) + (m_irq1 - m_irq0) + (m_idle1 - m_idle0) ))
pct() { awk -v a=$1 -v t=$2 'BEGIN { printf "%5.1f%%", (t > 0 ? 100 * a / t : 0) }'; }
# perfdhcp was sampled over SECS-1 of the SECS seconds: scale to the whole window.
c=$(awk -v c=$((c1 - c0)) -v s=$SECS 'BEGIN { printf "%d", c * s / (s - 1) }')
disc=$(grep -A1 'DISCOVER-OFFER' $OUT/perf.txt | awk '/sent packets/ {print $3}')
acks=$(grep -A2 'REQUEST-ACK' $OUT/perf.txt | awk '/received packets/ {print $3}')
{
  echo "$SERVER at $RATE DORA/s for $SECS s: $disc DISCOVERs sent, $acks ACKs received"
  echo "share of the machine's CPU time ($(nproc) cores, $total jiffies):"
  echo "  server process (user+sys)   $(pct $((s1 - s0)) $total)"
  echo "  perfdhcp (user+sys)         $(pct $c $total)"
  echo "  all user time               $(pct $((m_user1 - m_user0)) $total)"
  echo "  all system time             $(pct $((m_sys1 - m_sys0)) $total)"
  echo "  all irq+softirq             $(pct $((m_irq1 - m_irq0)) $total)"
  echo "  idle+iowait                 $(pct $((m_idle1 - m_idle0)) $total)"
  echo "UDP receive-buffer drops: server namespace $server_drops, perfdhcp's namespace $client_drops"
  awk -v t=$((s1 - s0)) -v hz=$(getconf CLK_TCK) -v a=${acks:-0} \
    'BEGIN { if (a > 0) printf "server CPU per ACK: %.1f us\n", 1e6 * t / hz / a }'
} | tee $OUT/cpu.txt

if [ -f $OUT/perf.data ]; then
  perf report -i $OUT/perf.data --no-children --sort dso,symbol --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -v '^$' | grep -E '^ +[0-9]' > $OUT/report.txt
  perf report -i $OUT/perf.data --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' > $OUT/callers.txt
  perf report -i $OUT/perf.data --no-children --sort comm --stdio -g none 2>/dev/null \
    | grep -E '^ +[0-9]' > $OUT/threads.txt
  echo "by thread:"; cat $OUT/threads.txt
  echo "self time, top symbols:"; head -40 $OUT/report.txt
fi
