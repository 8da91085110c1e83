#!/usr/bin/env bash
# Proves that scripts/deps.sh installs everything a new user's machine lacks: makes a
# pristine minimal Debian 12 root (debootstrap --variant=minbase), copies the committed
# checkout in (git archive HEAD), lends it only the Rust toolchain (~/.cargo, ~/.rustup:
# rustup cannot download here) and runs, inside a chroot with an empty environment, the
# README's first command (./scripts/demo.sh) and then the tests of `ipam` (etcd-client
# compiles its protos with protoc; the tests start the real etcd). A package missing from
# deps.sh fails here, so .ci/run turns red. Needs root.
#
# Only the debootstrap output is cached (FRESH_CACHE, default /var/cache/cni-fresh-check),
# as a tarball taken before any project step: every run unpacks a new root from it, so
# nothing installed by an earlier run can hide a missing install step. Delete the tarball
# to rebuild it (e.g. after a point release). Every mount is undone on every exit path,
# also on Ctrl-C / SIGTERM (processes left inside the root are killed first).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "scripts/fresh-check.sh needs root (debootstrap, chroot, mounts)" >&2
  exit 1
fi
for tool in debootstrap git tar; do
  command -v "$tool" >/dev/null || { echo "fresh-check: $tool missing (scripts/deps.sh installs it)" >&2; exit 1; }
done

# The machine's Debian mirror: deb822 sources first, else the one-line format.
mirror=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

cache=${FRESH_CACHE:-/var/cache/cni-fresh-check}
tarball="$cache/bookworm-minbase-$(printf %s "$mirror" | sha256sum | cut -c1-12).tar"
root=$(mktemp -d /var/tmp/fresh-check.XXXXXX)
child=""

# Every mount below $root, deepest first (from the kernel's own table).
mounts_below() {
  awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM HUP
  [[ -n $child ]] && kill -TERM "$child" 2>/dev/null
  # Processes still running inside the root (daemons a test started) hold its mounts.
  local pid tries
  for tries in 1 2 3 4 5; do
    local left=()
    for pid in /proc/[0-9]*; do
      [[ $(readlink "$pid/root" 2>/dev/null) == "$root"* ]] && left+=("${pid#/proc/}")
    done
    ((${#left[@]})) || break
    kill -KILL "${left[@]}" 2>/dev/null
    sleep 0.5
  done
  local m
  for m in $(mounts_below); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  if [[ -n $(mounts_below) ]]; then
    echo "fresh-check: mounts left under $root, not removing it:" >&2
    mounts_below >&2
    rc=1
  else
    rm -rf "$root"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

start=$SECONDS
if [[ ! -s $tarball ]]; then
  echo "== debootstrap --variant=minbase bookworm from $mirror (cached as $tarball)"
  mkdir -p "$cache"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -30 "$cache/debootstrap.log" >&2; rm -f "$cache/debootstrap.log"; exit 1; }
  rm -f "$cache/debootstrap.log"
  tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
else
  echo "== unpacking the cached debootstrap output $tarball"
  tar -C "$root" -xf "$tarball"
fi
# It becomes `/`: neither mktemp's 0700 nor the archived "." may lock out non-root users
# (apt's _apt, daemons that drop privileges).
chmod 0755 "$root"
echo "   root ready after $((SECONDS - start)) s"

# What any installed machine has: name resolution, and no daemons started by package
# installs inside the chroot (they would outlive it and hold its mounts).
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# The machine's Debian suites (updates and security too), as a Debian 12 install has them;
# debootstrap alone writes only `bookworm main`.
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
  rm -f "$root/etc/apt/sources.list"
fi
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

mkdir -p "$root/src" "$root/root/.cargo" "$root/root/.rustup"
git archive HEAD | tar -x -C "$root/src"

# `ip netns exec` remounts / as a slave: / must be a mount point. Private, so nothing
# mounted below propagates back to the host; the rbinds are slaves for the same reason
# (unmounting them must never unmount the host's /dev/pts or /sys/fs/cgroup).
mount --bind "$root" "$root"
mount --make-private "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount --bind "$HOME/.cargo" "$root/root/.cargo"
mount --bind "$HOME/.rustup" "$root/root/.rustup"

echo "== in the fresh root: ./scripts/demo.sh, then cargo test --profile tests -p ipam"
chroot "$root" env -i HOME=/root PATH=/root/.cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  TERM=dumb bash -c '
    set -euo pipefail
    cd /src
    t0=$SECONDS
    ./scripts/demo.sh
    echo "== fresh-check: demo.sh took $((SECONDS - t0)) s"
    t1=$SECONDS
    cargo test --profile tests -p ipam
    echo "== fresh-check: cargo test --profile tests -p ipam took $((SECONDS - t1)) s"
  ' &
child=$!
wait "$child"
child=""
echo "== fresh-check OK in $((SECONDS - start)) s"
