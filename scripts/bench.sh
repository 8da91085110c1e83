#!/usr/bin/env bash
# Builds the dist profile (what operators install) and runs the benchmark: cni-bridge+cni-ipam against the reference
# bridge+host-local (/usr/lib/cni). Arguments go to cni-bench (see --help), e.g.
#   scripts/bench.sh --pods 200 --parallel 16 --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/bench.sh needs root" >&2
  exit 1
fi
scripts/deps.sh
scripts/build-dist.sh
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CNI_BIN_DIR="$TARGET/dist" exec "$TARGET/dist/cni-bench" "$@"
