#!/bin/bash
# Set up and run the lab: install what is missing, build provd, then `provd lab up`: real
# BIOS and UEFI QEMU VMs network-boot against provd in a private network namespace, install
# through the mini-installer, and boot from their disks. Progress and a summary are shown;
# then everything the lab made is removed (pass --keep to leave it running for
# `provd lab status`; `provd lab down` removes it later).
#   sudo lab/run.sh [--keep] [provd lab up options, e.g. --vms 4 --firmware uefi]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the lab needs root (network namespaces, taps): sudo $0"; exit 1; }
keep=""
if [ "${1:-}" = "--keep" ]; then keep=1; shift; fi
lab/deps.sh
cargo build --release -q
PROVD=$PWD/target/release/provd
$PROVD lab down >/dev/null 2>&1 || true
status=0
if [ -n "$keep" ]; then
  $PROVD lab up "$@" || status=$?          # defaults: --vms 2 --firmware mixed
else
  $PROVD lab up --down "$@" || status=$?   # removes the lab after its summary
  $PROVD lab down >/dev/null 2>&1 || true  # and after an interruption or an error
fi
exit $status
