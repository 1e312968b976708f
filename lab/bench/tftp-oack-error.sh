#!/bin/bash
# async-tftp 0.4.2 vs provd's TFTP module, same run, loopback only: the PXE "OACK then
# ERROR" pattern (async-tftp issue #18) and 500 concurrent transfers. See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo run --release -q --example tftp_oack_error
