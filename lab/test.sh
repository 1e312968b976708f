#!/bin/bash
# The test command (README and .ci/run): install missing dependencies, then run every test
# tier: unit tests, in-process tests, and black-box tests of the real binary in network
# namespaces against real clients. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the tests need root (network namespaces): sudo $0"; exit 1; }
lab/deps.sh
# The storm load generator (lab/bench/storm) is its own crate; its unit tests run too,
# and the suite fails if either run fails.
status=0
cargo test --locked --no-fail-fast "$@" || status=$?
cargo test --locked --manifest-path lab/bench/storm/Cargo.toml || status=$?
# Issue 23's proof on real parts: the Debian 12 KVM image built natively, written by the
# installer environment to a BIOS and a UEFI VM, booted, and verified over libvirt TLS by
# provd's pool (about 12 minutes, most of it QEMU under TCG). Not with a test filter.
if [ $# -eq 0 ]; then
  lab/real-hypervisor.sh || status=$?
fi
exit $status
