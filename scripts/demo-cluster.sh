#!/usr/bin/env bash
# Multi-node demo: two "nodes" (network namespaces cdemo-n1, cdemo-n2) on an underlay
# bridge (in namespace cdemo-fabric, 10.251.0.0/24), each running `ipamd --datapath
# vxlan`; one pod per node attached by cni-vxlan with cluster IPAM (pool 10.252.0.0/16);
# the pod on node 1 pings its gateway and the pod on node 2 through the VXLAN overlay.
# Installs cni-vxlan, cni-ipam and ipamd to /opt/cni/bin (built by scripts/demo.sh).
# Cleans up also on failure. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=/opt/cni/bin
FABRIC=cdemo-fabric
NODES=(cdemo-n1 cdemo-n2)
PODS=(cdemo-p1 cdemo-p2)
POOL=10.252.0.0/16
DIR=$(mktemp -d /tmp/cdemo.XXXXXX)
STORE="file://$DIR/cluster.json"
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for p in "${PODS[@]}" "${NODES[@]}" "$FABRIC"; do ip netns del "$p" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT
cleanup
DIR=$(mktemp -d /tmp/cdemo.XXXXXX)
STORE="file://$DIR/cluster.json"
set -e

TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
install -d "$BIN"
install -m 0755 "$TARGET/dist/cni-vxlan" "$TARGET/dist/cni-ipam" "$TARGET/dist/ipamd" "$BIN/"

echo "== underlay: bridge br0 in $FABRIC, nodes at 10.251.0.1 and 10.251.0.2"
ip netns add "$FABRIC"
ip -n "$FABRIC" link add br0 type bridge
ip -n "$FABRIC" addr add 10.251.0.254/24 dev br0
ip -n "$FABRIC" link set br0 up
for i in 0 1; do
  n=${NODES[$i]}
  ip netns add "$n"
  ip -n "$FABRIC" link add "up$i" type veth peer name eth0 netns "$n"
  ip -n "$FABRIC" link set "up$i" master br0 up
  ip -n "$n" addr add "10.251.0.$((i + 1))/24" dev eth0
  ip -n "$n" link set eth0 up
  ip -n "$n" link set lo up
  ip -n "$n" route add default via 10.251.0.254
  mkdir -p "$DIR/$n"
  ip netns exec "$n" "$BIN/ipamd" run --node-name "$n" --store "$STORE" --pool "$POOL" \
    --network cdemo --data-dir "$DIR/$n" --datapath vxlan --resync 5s \
    2>"$DIR/$n/ipamd.log" &
  PIDS+=($!)
done

conf() { # conf NODE
  cat <<JSON
{"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"],
 "name": "cdemo", "type": "cni-vxlan",
 "ipam": {"type": "cni-ipam", "pool": "$POOL", "nodeName": "$1", "store": "$STORE",
          "dataDir": "$DIR/$1", "reserveGateway": true}}
JSON
}

echo "== waiting for both nodes to program each other"
for n in "${NODES[@]}"; do
  for _ in $(seq 100); do
    [[ $(ip -n "$n" route show proto 97 | wc -l) -ge 1 ]] && break
    sleep 0.1
  done
  echo "-- $n: routes to the other node (proto 97), VXLAN FDB"
  ip -n "$n" route show proto 97
  bridge -n "$n" fdb show dev cni-vx.1 | grep dst
done

declare -A IP
for i in 0 1; do
  p=${PODS[$i]} n=${NODES[$i]}
  ip netns add "$p"
  echo "== ADD $p on $n"
  conf "$n" | ip netns exec "$n" env CNI_COMMAND=ADD CNI_CONTAINERID="$p" \
    CNI_NETNS="/run/netns/$p" CNI_IFNAME=eth0 CNI_PATH="$BIN" "$BIN/cni-vxlan"
  echo
  IP[$p]=$(ip -n "$p" -4 -br addr show dev eth0 | awk '{print $3}' | cut -d/ -f1)
  ip -n "$p" -br addr show dev eth0
done

a=${PODS[0]} b=${PODS[1]}
gw=$(ip -n "$a" route show default | awk '{print $3}')
echo "== $a pings its gateway $gw"
ip netns exec "$a" ping -c 2 -W 2 "$gw"
echo "== $a (node 1) pings $b (node 2) at ${IP[$b]} through VXLAN"
ip netns exec "$a" ping -c 3 -W 2 "${IP[$b]}"

for i in 0 1; do
  p=${PODS[$i]} n=${NODES[$i]}
  echo "== DEL $p"
  conf "$n" | ip netns exec "$n" env CNI_COMMAND=DEL CNI_CONTAINERID="$p" \
    CNI_NETNS="/run/netns/$p" CNI_IFNAME=eth0 CNI_PATH="$BIN" "$BIN/cni-vxlan"
done
echo "== cluster demo OK"
