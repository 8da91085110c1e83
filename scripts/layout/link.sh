#!/usr/bin/env bash
# The linker scripts/build-dist.sh gives rustc (`-C linker=`) for the static plugins: `cc`
# with GNU gold and a section-ordering file, so the functions a plugin executes per
# ADD/DEL/CHECK/VERSION sit next to each other in .text (scripts/layout/README.md).
# rustc emits each function in a section of its own, `.text.<symbol>` (or
# `.text.unlikely.<symbol>`); the checked-in list scripts/layout/<binary>.order names the
# functions by mangled symbol. Rust's symbol hashes are stable across rebuilds of the same
# code and flags but change when a function's signature (or a dependency) does, so the
# names are mapped to this link's sections here, from the object files rustc hands over:
#  - a listed symbol that is in an object: its section;
#  - a legacy symbol (`..17h<hash>E`) that is not: the one section whose symbol differs
#    only in the hash, if exactly one such section exists and it is not listed itself;
#  - anything else (gone, ambiguous, glibc's functions): nothing, it stays where the
#    linker puts it (unlisted sections first, in input order, then the listed ones).
# A missing or stale list costs compactness, never the build. The counts go to LIST.stats.
#
# Arguments: rustc's for `cc`, plus `--layout-order=LIST` (build-dist.sh adds it with
# `-C link-arg`; its path carries the list's hash so a changed list relinks).
set -euo pipefail
list=""
args=()
for a in "$@"; do
  case $a in
    --layout-order=*) list=${a#--layout-order=} ;;
    *) args+=("$a") ;;
  esac
done
out="" objs=() prev=""
for a in "${args[@]}"; do
  [[ $prev == -o ]] && out=$a
  [[ $a == *.o ]] && objs+=("$a")
  prev=$a
done
if [[ -z $list || -z $out ]]; then
  exec cc "${args[@]}" -fuse-ld=gold
fi
order="$out.sections"
# Section names of the objects (readelf -SW: "  [NN] name TYPE ..."), then the mapping.
for o in "${objs[@]}"; do
  LC_ALL=C readelf -SW "$o" | sed -n 's/^ *\[ *[0-9]*\] \(\.text\.[^ ]*\) .*/\1/p'
done | awk -v list="$list" '
  function sym(s) { sub(/^\.text\.(unlikely\.|hot\.|startup\.|exit\.)?/, "", s); return s }
  # The symbol without its legacy hash (17h + 16 hex digits + E), or "" (mawk: no {16}).
  function stem(s) { if (match(s, /17h[0-9a-f]+E$/) && RLENGTH == 20) return substr(s, 1, length(s) - 17); return "" }
  { sec[sym($0)] = $0; st = stem(sym($0)); if (st != "") { count[st]++; bystem[st] = sym($0) } }
  END {
    while ((getline line < list) > 0) {
      if (line ~ /^#/ || line == "") continue
      n++; want[n] = line; listed[line] = 1
    }
    for (i = 1; i <= n; i++) {
      w = want[i]
      if (w in sec) { print sec[w]; exact++; continue }
      st = stem(w)
      if (st != "" && count[st] == 1 && !(bystem[st] in listed)) { print sec[bystem[st]]; moved++; continue }
      missing++
    }
    printf "layout: %s: %d listed, %d placed, %d by name without hash, %d not in this link\n",
      list, n, exact + moved, moved, missing > (list ".stats")
  }' >"$order"
exec cc "${args[@]}" -fuse-ld=gold "-Wl,--section-ordering-file=$order"
