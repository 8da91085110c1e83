#!/usr/bin/env bash
# The test command: installs what the tests need, builds the shipped binaries (profile
# `dist`), then runs
# every test of the workspace (unit tests and the end-to-end tests of conformance/,
# which run the built binaries in fresh network namespaces). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh needs root (network namespaces, bridges, nftables)" >&2
  exit 1
fi
scripts/deps.sh

cargo build --profile dist --workspace --bins
# The end-to-end tests run exactly the binaries built above (what operators install); the
# test code itself builds with `release`, which links much faster than fat LTO.
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CNI_BIN_DIR="$TARGET/dist" cargo test --release --workspace "$@"
