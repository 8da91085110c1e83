#!/usr/bin/env bash
# Installs what building, the demo and the whole test suite need, only when missing (one
# dpkg-query when everything is there, so it is quick and works offline). Debian 12, as
# root. scripts/fresh-check.sh proves this list on a minimal Debian root: a package the
# build or a test needs and this list lacks turns CI red there.
set -euo pipefail

pkgs=(
  ca-certificates             # apt over https mirrors, cargo fetching crates
  gcc libc6-dev               # `cc` links every Rust binary; build scripts compile C
  protobuf-compiler libprotobuf-dev # etcd-client's build runs protoc, which needs the
                              # well-known types (google/protobuf/*.proto) of libprotobuf-dev
  iproute2 iputils-ping procps # ip netns / ip -j, pings from pods, pgrep/ps/sysctl in tests
  nftables iptables           # nft -j list ruleset: masquerade checks; portmap programs iptables
  containernetworking-plugins # reference plugins in /usr/lib/cni (baseline, chains, interop)
  etcd-server                 # the real etcd for the cluster-store and ipamd tests
  podman runc busybox-static  # a real libcni runtime; busybox is also the pause image
  containerd                  # containerd 1.6's CRI (conformance/tests/containerd.rs)
  python3-grpcio python3-grpc-tools # the CRI client of conformance/tests/containerd.rs
  golang-go golang-github-appc-cni-dev golang-github-containerd-go-cni-dev
                              # libcni 1.1 and go-cni drivers (conformance/tests/libcni.rs)
  tcpdump iperf3              # inspection and throughput measurements
  time                        # /usr/bin/time -f %M: peak RSS baseline of conformance/tests/bench_spawn.rs
  user-mode-linux kmod        # IPIP end-to-end tests run in a UML guest (this kernel has no ipip)
  bird2 frr gobgpd            # real BGP speakers for the interoperability tests
  debootstrap                 # scripts/fresh-check.sh builds a minimal Debian root
)
# One dpkg-query for all: it prints the packages it knows, the others are missing.
declare -A ok=()
while read -r name status; do
  if [[ $status == "install ok installed" ]]; then ok[$name]=1; fi
done < <(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null || true)
missing=()
for p in "${pkgs[@]}"; do
  [[ -n ${ok[$p]:-} ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
