#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3) of each datapath across two "nodes" (network
# namespaces on an underlay bridge, each running ipamd), next to the underlay's own
# throughput between the same two node namespaces in the same run: vxlan and host-gw on
# this kernel, ipip inside User-Mode Linux when this kernel has no ipip (compared to the
# underlay inside the same UML guest). Prints a table: Gbit/s (median) and ratio.
# Then IPv6 next to IPv4 (conformance/tests/multinode_v6.rs): vxlan over an IPv4 and
# over an IPv6-only underlay and host-gw, dual-stack pods, both families in one run.
#
#   sudo scripts/bench-datapaths.sh                  # 3 rounds of 5 s
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 sudo scripts/bench-datapaths.sh
#
# Needs root, iperf3 and user-mode-linux (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/bench-datapaths.sh needs root (network namespaces)" >&2
  exit 1
fi
scripts/deps.sh

scripts/build-dist.sh
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CNI_BIN_DIR="$TARGET/dist" cargo test --profile tests -p conformance --test multinode \
  -- --ignored --exact bench_throughput --nocapture --test-threads=1
CNI_BIN_DIR="$TARGET/dist" cargo test --release -p conformance --test multinode_v6 \
  -- --ignored --exact bench_throughput_v6 --nocapture --test-threads=1
