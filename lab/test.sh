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
exit $status
