# Shared by dhcp-vs-peers.sh and dhcp-profile.sh (sourced, not run): the namespaces and the
# three DHCP servers, configured alike. Callers set W (a work directory), ROOT (the repo)
# and PROVD (the binary). Namespace bsrv holds the server on veth bveth-s 10.77.0.1/16;
# bcli runs perfdhcp as a relay from 10.77.0.2. Only these two namespaces are touched.

cleanup() {
  for ns in bsrv bcli; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null; done
    ip netns del $ns 2>/dev/null
  done
}
setup() {
  cleanup
  rm -rf $W; mkdir -p $W /run/kea
  ip netns add bsrv; ip netns add bcli
  ip -n bsrv link add bveth-s type veth peer name bveth-c netns bcli
  ip -n bsrv addr add 10.77.0.1/16 dev bveth-s; ip -n bcli addr add 10.77.0.2/16 dev bveth-c
  for n in bsrv bcli; do ip -n $n link set lo up; done
  ip -n bsrv link set bveth-s up; ip -n bcli link set bveth-c up
}

start_server() {  # $1 = provd | kea | iscd
  case $1 in
  provd)
    sed -e 's/pveth-s/bveth-s/' -e "s#/tmp/provd-bench-state#$W/provd-state#" "$ROOT/lab/bench/bench.toml" > $W/bench.toml
    ip netns exec bsrv "$PROVD" serve --config $W/bench.toml > $W/srv.log 2>&1 & ;;
  kea)
    cat > $W/kea4.json <<EOT
{ "Dhcp4": { "interfaces-config": { "interfaces": [ "bveth-s" ] },
  "lease-database": { "type": "memfile", "persist": true, "name": "$W/leases4.csv", "lfc-interval": 0 },
  "valid-lifetime": 4000,
  "multi-threading": { "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64 },
  "subnet4": [ { "id": 1, "subnet": "10.77.0.0/16", "pools": [ { "pool": "10.77.1.0 - 10.77.255.254" } ],
    "option-data": [ { "name": "routers", "data": "10.77.0.1" } ], "next-server": "10.77.0.1", "boot-file-name": "undionly.kpxe" } ],
  "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$W/kea.log" } ], "severity": "WARN" } ] } }
EOT
    # Kea's pid and lock files would otherwise outlive a kill -9 in /run/kea and make the
    # next fresh Kea refuse to start; keep them in the per-run directory.
    KEA_PIDFILE_DIR=$W KEA_LOCKFILE_DIR=$W ip netns exec bsrv kea-dhcp4 -c $W/kea4.json > $W/srv.log 2>&1 & ;;
  iscd)
    cat > $W/dhcpd.conf <<EOT
default-lease-time 4000; max-lease-time 4000; authoritative; ping-check false;
subnet 10.77.0.0 netmask 255.255.0.0 { range 10.77.1.0 10.77.255.254; option routers 10.77.0.1; next-server 10.77.0.1; filename "undionly.kpxe"; }
EOT
    touch $W/dhcpd.leases
    ip netns exec bsrv dhcpd -4 -f -q -cf $W/dhcpd.conf -lf $W/dhcpd.leases -pf $W/dhcpd.pid bveth-s > $W/srv.log 2>&1 & ;;
  esac
  SPID=$!
  disown $SPID   # its death at cleanup is expected: no "Killed" noise from bash
  sleep 2
}

