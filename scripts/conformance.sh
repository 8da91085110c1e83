#!/usr/bin/env bash
# Runs the CNI conformance suite against a plugin and prints the table (case, version,
# spec rule, verdict, reason); exits non-zero when a case fails. Needs root.
#
#   scripts/conformance.sh                         # cni-bridge (+ cni-ipam), every version
#   scripts/conformance.sh --plugin bridge --bin-dir /usr/lib/cni   # any plugin (see --help)
#   scripts/conformance.sh --reference             # regenerate conformance/REFERENCE.md
#
# Builds the release binaries first (cni-bridge, cni-ipam, cni-conformance) in
# ${CARGO_TARGET_DIR:-target}.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/conformance.sh needs root (network namespaces, bridges, nftables)" >&2
  exit 1
fi
cargo build --release --bins -p cni-bridge -p ipam -p conformance >&2
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$TARGET/release/cni-conformance"

if [[ "${1:-}" == "--reference" ]]; then
  # The calibration: the reference bridge + host-local of Debian's
  # containernetworking-plugins, through the same suite. Its failures are recorded,
  # not fixed: tests/calibration.rs asserts a fresh run gives the same verdicts.
  REF_DIR="${CNI_REF_DIR:-/usr/lib/cni}"
  PKG="$(dpkg-query -W -f '${Version}' containernetworking-plugins 2>/dev/null || echo unknown)"
  TABLE="$(mktemp)"
  trap 'rm -f "$TABLE"' EXIT
  set +e
  "$BIN" run --plugin bridge --ipam host-local --bin-dir "$REF_DIR" --out "$TABLE" >/dev/null
  rc=$?
  set -e
  if [[ ! -s "$TABLE" ]]; then
    echo "the reference run produced no table (exit $rc)" >&2
    exit 1
  fi
  {
    echo "# Calibration: the reference plugins through the conformance suite"
    echo
    echo "The conformance suite (\`cni-conformance run\`, see the README) run against the reference"
    echo "\`bridge\` + \`host-local\` of Debian's \`containernetworking-plugins\`, to check that the"
    echo "suite judges real behaviour: the reference passes the basic cases and fails where it is"
    echo "known to deviate from the spec. \`conformance/tests/calibration.rs\` asserts that a fresh"
    echo "run gives exactly the verdicts below (reasons may differ: names are random)."
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- package: containernetworking-plugins $PKG ($REF_DIR)"
    echo "- command: \`scripts/conformance.sh --reference\`"
    echo "  (= \`cni-conformance run --plugin bridge --ipam host-local --bin-dir $REF_DIR\`)"
    echo "- versions: the ones the plugin reports (0.1.0 … 1.0.0; no 1.1.0, so GC and STATUS are skipped)"
    echo
    echo "## What the reference fails, and why"
    echo
    echo "- \`add-prevresult\`: \`bridge\` ignores \`prevResult\` and prints only its own result."
    echo "- \`check-route-implicit-gw\`: a route configured without \`gw\` is installed via the"
    echo "  gateway, then CHECK looks for it with no gateway and reports it missing (code 999)."
    echo "- \`del-cleanup-netns-gone\`: with \`ipMasq\`, DEL after the netns is gone leaves the"
    echo "  masquerade chain and its POSTROUTING rule (it needs the netns to find the address)."
    echo "- \`env-missing\`: without \`CNI_COMMAND\` it prints its version text and exits 0."
    echo
    echo "## Table"
    echo
    cat "$TABLE"
  } > conformance/REFERENCE.md
  echo "wrote conformance/REFERENCE.md" >&2
  cat "$TABLE"
  exit 0
fi

if [[ $# -eq 0 ]]; then
  set -- --plugin cni-bridge --ipam cni-ipam --bin-dir "$TARGET/release" --bin-dir /usr/lib/cni
fi
exec "$BIN" run "$@"
