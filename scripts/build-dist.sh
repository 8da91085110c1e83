#!/usr/bin/env bash
# The one place that builds the shipped binaries: profile `dist` (what operators install:
# `release` with opt-level "z", fat LTO, one codegen unit), left in
# ${CARGO_TARGET_DIR:-target}/dist/, where scripts/test.sh, the demos, the benchmarks and
# every `CNI_BIN_DIR=$PWD/target/dist` command of the README take them.
#
#   scripts/build-dist.sh                       # every binary of the workspace
#   scripts/build-dist.sh cni-bridge ipam       # the binaries of these packages
#   DIST_STATIC=0 scripts/build-dist.sh         # everything dynamic (to compare)
#
# Static glibc (DIST_STATIC=1): the binaries a runtime execs once per ADD/DEL/CHECK (the
# plugins and cni-ipam, list STATIC below) are linked with glibc's static archive, so a
# start maps no libc.so/ld.so pages and runs no dynamic loader (README § Performance,
# "Static glibc"). Only the binary's own crate gets `-C target-feature=+crt-static`
# (`cargo rustc -- FLAGS`): std and libc decide how they link libc when the final binary
# links, so the dependencies are the same compiled crates as a dynamic build's, no
# `--target` is needed (RUSTFLAGS would reach proc-macros and build scripts, which cannot
# be static) and the binaries stay in target/dist. `cargo rustc` takes one binary at a
# time, so these links run one after the other; the rest is one `cargo build`.
# `-C relocation-model=static` makes it a non-PIE static executable, which agrees with the
# plugins' build.rs `-no-pie` and started faster than a static PIE (README).
# ipamd (a daemon: starts once, resolves etcd names through the full NSS), cni-bench and
# cni-conformance stay dynamic. After the build every binary of STATIC is checked (no
# PT_INTERP or PT_DYNAMIC program header, answers CNI_COMMAND=VERSION), else this script
# fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# Static is the default (DIST_STATIC=0: dynamic, for comparison). It needs a static
# archive of every C library a binary links; the plugins link none but glibc since
# cni-core builds its nftables messages itself (libnftnl's archive needs libmnl's, which
# Debian does not ship).
DIST_STATIC="${DIST_STATIC:-1}"
# package:binary, the binaries linked statically when DIST_STATIC=1 (a new plugin crate
# is added here).
STATIC=(cni-bridge:cni-bridge cni-routed:cni-routed cni-vxlan:cni-vxlan cni-ipip:cni-ipip
  ipam:cni-ipam)
STATIC_FLAGS=(-C target-feature=+crt-static -C relocation-model=static)
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

# The packages asked for (`-p` accepted and ignored); none: the whole workspace.
pkgs=()
for a in "$@"; do
  [[ $a == -p ]] || pkgs+=("$a")
done
static=()   # package:binary, linked statically
dynamic=()  # the arguments of one `cargo build` for the rest
for s in "${STATIC[@]}"; do
  if [[ $DIST_STATIC == 1 ]] && { ((${#pkgs[@]} == 0)) || [[ " ${pkgs[*]} " == *" ${s%%:*} "* ]]; }; then
    static+=("$s")
  fi
done
is_static() { [[ " ${static[*]} " == *" $1:"* ]]; }
if ((${#pkgs[@]} == 0)); then
  dynamic=(--workspace)
  for s in "${static[@]}"; do dynamic+=(--exclude "${s%%:*}"); done
else
  for p in "${pkgs[@]}"; do is_static "$p" || dynamic+=(-p "$p"); done
fi

for s in "${static[@]}"; do
  cargo rustc --profile dist -p "${s%%:*}" --bin "${s#*:}" -- "${STATIC_FLAGS[@]}"
done
if ((${#dynamic[@]})); then
  cargo build --profile dist --bins "${dynamic[@]}"
fi

# Each static binary must be a plain static executable: no program interpreter (ld.so) and
# no dynamic section (a library that got linked dynamically leaves one, and the binary
# dies of SIGSEGV at start: seen with libnftnl), and it must start and answer VERSION.
for s in "${static[@]}"; do
  bin="$TARGET/dist/${s#*:}"
  headers=$(LC_ALL=C readelf -lW "$bin") || { echo "build-dist: cannot read $bin" >&2; exit 1; }
  if grep -qwE 'INTERP|DYNAMIC' <<<"$headers"; then
    echo "build-dist: $bin is not a static executable (has INTERP or DYNAMIC; DIST_STATIC=1)" >&2
    exit 1
  fi
  if ! CNI_COMMAND=VERSION "$bin" </dev/null | grep -q cniVersion; then
    echo "build-dist: $bin (static) does not answer CNI_COMMAND=VERSION" >&2
    exit 1
  fi
done
