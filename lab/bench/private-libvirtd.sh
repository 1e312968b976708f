# Sourced by the VM benchmarks: a private libvirtd in its own network and mount namespace
# (as the tests run theirs), so the machine's libvirt is never touched.
#   start_private_libvirtd NS DIR   -> sets URI; the daemon's files live under DIR
#   stop_private_libvirtd NS        -> kills everything in NS and deletes it
start_private_libvirtd() {
  local ns=$1 dir=$2
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  mkdir -p "$dir/run" "$dir/images"
  echo 'listen_tcp = 0' > "$dir/libvirtd.conf"
  ip netns exec "$ns" unshare --mount --propagation private sh -c "
mkdir -p /run/libvirt && mount --bind $dir/run /run/libvirt
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt/qemu; do mkdir -p \$d; mount -t tmpfs tmpfs \$d; done
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu/nvram
virtlogd -d -p /run/libvirt/virtlogd.pid
exec libvirtd -p /run/libvirt/libvirtd.pid -f $dir/libvirtd.conf" >"$dir/libvirtd.log" 2>&1 &
  disown
  URI="qemu:///system?socket=$dir/run/libvirt-sock"
  for _ in $(seq 50); do virsh -q -c "$URI" list >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "the private libvirtd did not start: $(cat "$dir/libvirtd.log")" >&2
  return 1
}

stop_private_libvirtd() {
  ip netns pids "$1" 2>/dev/null | xargs -r kill -9 || true
  sleep 0.5
  ip netns del "$1" 2>/dev/null || true
}
