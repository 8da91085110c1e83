#!/usr/bin/env bash
# Compares real ADDs and DELs of the plugins in two or more binary directories (e.g. dist
# binaries linked with and without the code-layout lists), interleaved so the machine's
# load hits them alike: per directory and plugin the medians of `perf stat` page faults and
# task-clock (ms) of one ADD and one DEL, and the max RSS (`/usr/bin/time -f %M`, KB).
#   DIST_LAYOUT=0 CARGO_TARGET_DIR=/tmp/plain scripts/build-dist.sh cni-bridge cni-routed ipam
#   scripts/build-dist.sh cni-bridge cni-routed ipam
#   sudo scripts/layout/compare.sh /tmp/plain/dist target/dist      # ROUNDS=20 PLUGINS=...
# Each directory needs the plugins and cni-ipam (in-process IPAM looks it up in CNI_PATH).
# Own netns, bridge and subnet (from the pid), removed on exit. Needs root and perf.
set -euo pipefail
ROUNDS="${ROUNDS:-20}"
PLUGINS="${PLUGINS:-cni-bridge cni-routed cni-vxlan}"
tag="cmp$$"
netns="$tag"
bridge="${tag}br"
work=$(mktemp -d /tmp/layout-compare.XXXXXX)
cleanup() {
  ip netns del "$netns" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  ip link del "${bridge}v" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$netns"
echo "# $(date -u '+%F %T UTC'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"

d=0 k=0
declare -A conf
for dir in "$@"; do
  d=$((d + 1))
  for p in $PLUGINS; do
    k=$((k + 1))
    extra=""
    [[ $p == cni-bridge ]] && extra=",\"bridge\":\"$bridge\",\"isGateway\":true"
    [[ $p == cni-vxlan ]] && extra=",\"bridge\":\"${bridge}v\",\"isGateway\":true,\"mtu\":1450"
    # One subnet and data dir per directory and plugin (a /28 each of 10.253.X.0/24).
    ((k <= 16)) || { echo "compare.sh: at most 16 directory x plugin pairs" >&2; exit 2; }
    net="10.253.$(($$ % 250)).$((16 * (k - 1)))/28"
    conf[$d.$p]="{\"cniVersion\":\"1.0.0\",\"name\":\"$tag$d$p\",\"type\":\"$p\",\"ipMasq\":false$extra,\"ipam\":{\"type\":\"cni-ipam\",\"subnet\":\"$net\",\"dataDir\":\"$work/ipam$d$p\"}}"
  done
done

# inv DIR PLUGIN COMMAND IFNAME CONF -> "faults ms" of one invocation; and the max RSS.
inv() {
  local out
  out=$(CNI_COMMAND=$3 CNI_CONTAINERID="$tag-$4" CNI_NETNS="/var/run/netns/$netns" \
    CNI_IFNAME=$4 CNI_PATH="$1" perf stat -x, -e page-faults,task-clock "$1/$2" <<<"$5" 2>&1 >/dev/null) ||
    { echo "compare.sh: $1/$2 $3 $4 failed: $out" >&2; exit 1; }
  echo "$(grep page-faults <<<"$out" | cut -d, -f1) $(grep task-clock <<<"$out" | cut -d, -f1)"
}
rss() {
  CNI_COMMAND=$3 CNI_CONTAINERID="$tag-$4" CNI_NETNS="/var/run/netns/$netns" CNI_IFNAME=$4 \
    CNI_PATH="$1" /usr/bin/time -f %M "$1/$2" <<<"$5" 2>&1 >/dev/null | tail -1
}
for r in $(seq "$ROUNDS"); do
  d=0
  for dir in "$@"; do
    d=$((d + 1))
    for p in $PLUGINS; do
      # Interface names: unique per directory, plugin and round (e<d><plugin initial><r>).
      ifn="e$d${p:4:1}$r"
      inv "$dir" "$p" ADD "$ifn" "${conf[$d.$p]}" >>"$work/add.$d.$p"
      inv "$dir" "$p" DEL "$ifn" "${conf[$d.$p]}" >>"$work/del.$d.$p"
      rss "$dir" "$p" ADD "${ifn}m" "${conf[$d.$p]}" >>"$work/rssadd.$d.$p"
      rss "$dir" "$p" DEL "${ifn}m" "${conf[$d.$p]}" >>"$work/rssdel.$d.$p"
    done
  done
done
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-32s %-11s %10s %10s %10s %10s %10s %10s\n' dir plugin "ADD flt" "ADD ms" "ADD KB" \
  "DEL flt" "DEL ms" "DEL KB"
d=0
for dir in "$@"; do
  d=$((d + 1))
  for p in $PLUGINS; do
    printf '%-32s %-11s %10s %10s %10s %10s %10s %10s\n' "$dir" "$p" \
      "$(cut -d' ' -f1 "$work/add.$d.$p" | median)" "$(cut -d' ' -f2 "$work/add.$d.$p" | median)" \
      "$(median <"$work/rssadd.$d.$p")" \
      "$(cut -d' ' -f1 "$work/del.$d.$p" | median)" "$(cut -d' ' -f2 "$work/del.$d.$p" | median)" \
      "$(median <"$work/rssdel.$d.$p")"
  done
done
echo "# end $(date -u '+%T UTC'), load: $(cut -d' ' -f1-3 /proc/loadavg)"
