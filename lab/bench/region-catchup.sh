#!/bin/bash
# The region (`provd region serve`, the real binary) following SITES simulated sites of
# HOSTS hosts each over mutual TLS (each a feed in the site API's wire format, through
# provd's own HTTPS listener): cold catch-up time and the region's memory, the cost per
# change when every site changes CHANGES hosts at once, and the catch-up after an outage
# that voids every cursor (each site relisted). No root needed; loopback only.
#
#   lab/bench/region-catchup.sh [SITES] [HOSTS] [CHANGES]     (defaults 50, 500, 200)
set -eu
cd "$(dirname "$0")/../.."
SITES=${1:-50} HOSTS=${2:-500} CHANGES=${3:-200} cargo test --release --test bench_region -- --ignored --nocapture 2>&1 |
  grep -E "^region"
