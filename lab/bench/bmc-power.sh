#!/bin/bash
# `provd hosts reinstall --all --power` over N emulated BMCs (OpenIPMI's ipmi_sim, IPMI 2.0
# over LAN on the loopback of a private namespace; each BMC powers a QEMU machine that is
# started paused (-S: a real ipmi-bmc-extern peer for the BMC, no CPU spent))
# against the same job as an operator's shell loop with ipmitool: for every host
# `chassis bootdev pxe` then `chassis power cycle` (or `on` when off). Both start from every
# BMC powered off. Prints wall time, failures and the ratio.
#
#   sudo lab/bench/bmc-power.sh [N] [PARALLEL]        (defaults 50 and 16)
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespace)"; exit 1; }
N=${1:-50} PAR=${2:-16}
NS=provd-bmcbench
W=$(mktemp -d /tmp/provd-bmcbench.XXXXXX)
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
ip -n $NS link add bb0 type veth peer name bb1
ip -n $NS link set bb1 up
ip -n $NS addr add 10.250.0.1/24 dev bb0
ip -n $NS link set bb0 up

printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n' > "$W/cmd.emu"
printf '[credentials.bench]\nusername = "admin"\npassword = "bench-pw"\n' > "$W/secrets.toml"
chmod 600 "$W/secrets.toml"
mkdir -p "$W/assets" "$W/conf"
cat > "$W/conf/site.toml" <<TOML
[daemon]
state_dir = "$W/state"
templates_dir = "$PWD/templates"
assets_dir = "$W/assets"
api_listen = "127.0.0.1:6767"
bmc_secrets = "$W/secrets.toml"

[profiles.p]
os = "el9"
kickstart = "kickstart/el9-kvm.ks.j2"

[sites.b]
server_address = "10.250.0.1"
listen = [{ interface = "bb0", address = "10.250.0.1" }]
[[sites.b.subnets]]
prefix = "10.250.0.0/24"
pools = [{ start = "10.250.0.100", end = "10.250.0.200" }]
TOML
for i in $(seq 1 "$N"); do
  port=$((7000 + i))
  mkdir -p "$W/bmc$i/state"
  cat > "$W/bmc$i/lan.conf" <<CONF
name "bench$i"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    guid a1234567$(printf %08x "$i")89abcdefa1234567
  endlan
  serial 15 127.0.0.1 $((9000 + i)) codec VM
  startcmd "qemu-system-x86_64 -accel tcg -m 16 -S -nodefaults -display none -chardev socket,id=ipmi0,host=127.0.0.1,port=$((9000 + i)),reconnect=10 -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-bt,bmc=bmc0"
  startnow false
  poweroff_wait 0
  kill_wait 1
  user 2 true "admin" "bench-pw" admin 10 none md2 md5 straight
CONF
  ip netns exec $NS ipmi_sim -c "$W/bmc$i/lan.conf" -f "$W/cmd.emu" -n -s "$W/bmc$i/state" > "$W/bmc$i/log" 2>&1 &
  disown
  printf '[[sites.b.hosts]]\nmac = "52:54:00:25:%02x:%02x"\nhostname = "n%02d"\nprofile = "p"\nbmc = { driver = "ipmi", address = "127.0.0.1:%d", credentials = "bench" }\n' \
    $((i / 256)) $((i % 256)) "$i" "$port" >> "$W/conf/site.toml"
done
ip netns exec $NS "$PROVD" serve --config "$W/conf" > "$W/provd.log" 2>&1 &
disown
sleep 2
ipmi() { ip netns exec $NS env IPMI_PASSWORD=bench-pw ipmitool -I lanplus -H 127.0.0.1 -p "$1" -U admin -E -C 3 "${@:2}"; }
all_off() {
  for i in $(seq 1 "$N"); do ipmi $((7000 + i)) chassis power off >/dev/null 2>&1 || true; done
  sleep 2   # the simulators reap their machines
}
count_on() { local c=0; for i in $(seq 1 "$N"); do ipmi $((7000 + i)) chassis power status 2>/dev/null | grep -q "is on" && c=$((c + 1)); done; echo $c; }

all_off
t0=$(date +%s.%N)
ip netns exec $NS "$PROVD" hosts reinstall --all --power --parallel "$PAR" --json \
  --server 127.0.0.1:6767 --state-dir "$W/state" --config "$W/conf" > "$W/provd.json" 2>"$W/provd.err" || true
t1=$(date +%s.%N)
provd_s=$(echo "$t1 - $t0" | bc)
provd_failed=$(grep -c '"ok": false' "$W/provd.json" || true)
provd_on=$(count_on)

all_off
t0=$(date +%s.%N)
shell_failed=0
for i in $(seq 1 "$N"); do
  p=$((7000 + i))
  ipmi $p chassis bootdev pxe >/dev/null 2>&1 || true   # ipmi_sim refuses it, as for provd
  if ipmi $p chassis power status 2>/dev/null | grep -q "is on"; then
    ipmi $p chassis power cycle >/dev/null 2>&1 || shell_failed=$((shell_failed + 1))
  else
    ipmi $p chassis power on >/dev/null 2>&1 || shell_failed=$((shell_failed + 1))
  fi
done
t1=$(date +%s.%N)
shell_s=$(echo "$t1 - $t0" | bc)
shell_on=$(count_on)

echo "bmc power: $N emulated IPMI BMCs (ipmi_sim), every one off before each run"
printf 'provd hosts reinstall --all --power --parallel %s: %6.2f s, %s failed, %s/%s on afterwards\n' "$PAR" "$provd_s" "$provd_failed" "$provd_on" "$N"
printf 'shell loop (ipmitool bootdev pxe + power on|cycle):  %6.2f s, %s failed, %s/%s on afterwards\n' "$shell_s" "$shell_failed" "$shell_on" "$N"
printf 'ratio shell/provd: %.2f\n' "$(echo "$shell_s / $provd_s" | bc -l)"
