#!/usr/bin/env bash
# The test command: installs what the tests need, builds the shipped binaries once
# (scripts/build-dist.sh: profile `dist`, what operators install), then runs every test of the workspace (unit
# tests, the crates' tests, and the end-to-end tests of conformance/, which run exactly
# the `dist` binaries in fresh network namespaces). The test code builds in the cheap
# `tests` profile (no optimisation), not in a second optimised LTO build. Needs root.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p conformance --test gc).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh needs root (network namespaces, bridges, nftables)" >&2
  exit 1
fi
scripts/deps.sh

t0=$SECONDS
scripts/build-dist.sh
t1=$SECONDS
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CNI_BIN_DIR="$TARGET/dist" cargo test --profile tests --workspace --no-run
t2=$SECONDS
echo "scripts/test.sh: built dist binaries in $((t1 - t0)) s, test binaries in $((t2 - t1)) s"
CNI_BIN_DIR="$TARGET/dist" cargo test --profile tests --workspace "$@"
echo "scripts/test.sh: tests ran in $((SECONDS - t2)) s"
