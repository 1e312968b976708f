#!/bin/bash
# Template push between two real libvirtds over TLS: provd's `vm template push` path
# (libvirt storage streams, SHA-256 while streaming and on a read-back) against
# `virsh vol-download | virsh vol-upload` (no check), same run, rounds alternated.
#
#   sudo lab/bench/template-push.sh [DATA_GIB] [ROUNDS]     (defaults 2 and 3)
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, libvirtd)"; exit 1; }
DATA_GIB=${1:-2} ROUNDS=${2:-3} cargo test --release --test bench_template_push -- --ignored --nocapture 2>&1 |
  grep -E "^(round|template push)"
