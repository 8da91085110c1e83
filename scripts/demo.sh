#!/usr/bin/env bash
# Demo: build, install cni-bridge and cni-ipam to /opt/cni/bin, attach two pod
# namespaces to bridge cnidemo0 (10.250.0.0/24), show their addresses, ping the gateway
# and the other pod, then detach and clean up (also on failure); then the two-node
# VXLAN demo (scripts/demo-cluster.sh). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/demo.sh needs root (try: sudo scripts/demo.sh)" >&2
  exit 1
fi
scripts/deps.sh

BIN=/opt/cni/bin
BRIDGE=cnidemo0
SUBNET=10.250.0.0/24
GATEWAY=10.250.0.1
PODS=(cnidemo-a cnidemo-b)
DATA=$(mktemp -d /tmp/cnidemo.XXXXXX)
CONF=$(cat <<JSON
{
  "cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],
  "name": "cnidemo",
  "type": "cni-bridge",
  "bridge": "$BRIDGE",
  "isGateway": true,
  "ipMasq": false,
  "ipam": {
    "type": "cni-ipam",
    "ranges": [[{ "subnet": "$SUBNET" }]],
    "dataDir": "$DATA"
  }
}
JSON
)

cni() { # cni COMMAND POD
  echo "$CONF" | CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=/run/netns/$2 \
    CNI_IFNAME=eth0 CNI_PATH=$BIN "$BIN/cni-bridge"
}

cleanup() {
  set +e
  for p in "${PODS[@]}"; do
    [[ -e /run/netns/$p ]] && cni DEL "$p" >/dev/null 2>&1
    ip netns del "$p" 2>/dev/null
  done
  ip link del "$BRIDGE" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT
cleanup # leftovers of an interrupted earlier demo
set -e

echo "== building (dist profile: what operators install)"
scripts/build-dist.sh cni-bridge cni-vxlan ipam ipamd
echo "== installing cni-bridge and cni-ipam to $BIN"
install -d "$BIN"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
install -m 0755 "$TARGET/dist/cni-bridge" "$TARGET/dist/cni-ipam" "$BIN/"

declare -A IP
for p in "${PODS[@]}"; do
  ip netns add "$p"
  echo "== ADD $p"
  cni ADD "$p"
  echo
  IP[$p]=$(ip -n "$p" -4 -br addr show dev eth0 | awk '{print $3}' | cut -d/ -f1)
  ip -n "$p" -br addr show dev eth0
done

a=${PODS[0]} b=${PODS[1]}
echo "== $a pings its gateway $GATEWAY"
ip netns exec "$a" ping -c 2 -W 2 "$GATEWAY"
echo "== $a pings $b at ${IP[$b]}"
ip netns exec "$a" ping -c 2 -W 2 "${IP[$b]}"

for p in "${PODS[@]}"; do
  echo "== DEL $p"
  cni DEL "$p"
done
echo "== demo OK"

# The same across two nodes: cni-vxlan + ipamd.
scripts/demo-cluster.sh
