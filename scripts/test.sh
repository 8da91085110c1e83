#!/usr/bin/env bash
# The test command: installs what the tests need, builds the release binaries, then runs
# every test of the workspace (unit tests and the end-to-end tests of conformance/,
# which run the built binaries in fresh network namespaces). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/test.sh needs root (network namespaces, bridges, nftables)" >&2
  exit 1
fi
scripts/deps.sh

cargo build --release --workspace --bins
# Release, so the end-to-end tests run exactly the binaries built above (one compile).
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
CNI_BIN_DIR="$TARGET/release" cargo test --release --workspace "$@"
