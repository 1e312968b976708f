# Sourced by the lab's guest scripts (lab/guest-on-hypervisor.sh, lab/datacenter-network.sh):
# a file put on, or taken off, a lab hypervisor as a volume of its image directory, over
# libvirt TLS from the lab namespace. These are the scripts' fixtures (boot media for their
# templates), not what they test. A transient dir pool is made for the call and destroyed
# after it (destroying a transient pool leaves its files).
#   hv_put_volume URI NAME FILE     upload FILE as /var/lib/libvirt/images/NAME
#   hv_delete_volume URI NAME       remove it (no error when it is not there)
HV_IMAGES_DIR=/var/lib/libvirt/images
HV_FIXTURE_POOL=provd-lab-fixture

hv_put_volume() {
  local uri=$1 name=$2 file=$3
  ip netns exec provd-lab virsh -q -c "$uri" pool-create-as "$HV_FIXTURE_POOL" dir --target "$HV_IMAGES_DIR" >/dev/null
  ip netns exec provd-lab virsh -q -c "$uri" vol-create-as "$HV_FIXTURE_POOL" "$name" "$(stat -c %s "$file")" --format raw >/dev/null
  ip netns exec provd-lab virsh -q -c "$uri" vol-upload --pool "$HV_FIXTURE_POOL" "$name" "$file"
  ip netns exec provd-lab virsh -q -c "$uri" pool-destroy "$HV_FIXTURE_POOL" >/dev/null
}

hv_delete_volume() {
  local uri=$1 name=$2
  ip netns exec provd-lab virsh -q -c "$uri" pool-create-as "$HV_FIXTURE_POOL" dir --target "$HV_IMAGES_DIR" >/dev/null 2>&1 || true
  ip netns exec provd-lab virsh -q -c "$uri" vol-delete --pool "$HV_FIXTURE_POOL" "$name" >/dev/null 2>&1 || true
  ip netns exec provd-lab virsh -q -c "$uri" pool-destroy "$HV_FIXTURE_POOL" >/dev/null 2>&1 || true
}
