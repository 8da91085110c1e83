#!/usr/bin/env bash
# Installs what building and testing need, only when missing (so it is quick and works
# offline on a machine that already has them). Debian/Ubuntu, as root.
set -euo pipefail

pkgs=(
  containernetworking-plugins # reference plugins in /usr/lib/cni (baseline, interop tests)
  iproute2                    # ip netns / ip -j: test set-up and inspection
  iputils-ping                # connectivity checks from pod namespaces
  nftables                    # nft -j list ruleset: masquerade checks
  libnftnl-dev libmnl-dev pkg-config # the nftnl crate links libnftnl (masquerade rules)
  protobuf-compiler           # etcd-client generates its gRPC code with protoc at build time
  etcd-server                 # the real etcd for the cluster-store and ipamd tests
  podman runc busybox-static  # a real libcni runtime for the conformance suite
  iptables                    # the reference portmap plugin programs iptables
  tcpdump iperf3              # inspection and throughput measurements
  user-mode-linux kmod        # IPIP end-to-end tests run in a UML guest (this kernel has no ipip)
  bird2                       # the real BIRD 2 for the BGP interoperability tests
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
