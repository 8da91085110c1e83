#!/usr/bin/env bash
# The time of one ADD and one DEL, phase by phase (CNI_TRACE spans, see
# cni-core/src/timing.rs), with cni-ipam in-process and exec'd, next to the kernel floors.
# Builds the dist profile of the plugins and cni-bench. Needs root.
#   scripts/breakdown.sh                 # bridge, routed, cluster IPAM; 40 pods each
#   scripts/breakdown.sh --pods 100
# Compare by ratio within one run: absolute numbers move with the machine's load.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/breakdown.sh needs root" >&2
  exit 1
fi
scripts/build-dist.sh cni-bridge ipam cni-routed cni-vxlan conformance
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BENCH="$TARGET/dist/cni-bench"
export CNI_BIN_DIR="$TARGET/dist"
echo "# $(date -u '+%F %T UTC'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BENCH" floors
for pair in bridge routed cluster; do
  echo
  "$BENCH" breakdown --pair "$pair" "$@"
done
