#!/usr/bin/env bash
# The cost of starting a plugin process: CPU (perf stat task-clock of exec, loader,
# runtime and exit, CNI_COMMAND=VERSION so nothing else runs), page faults and max RSS,
# interleaved over the binaries given so that the machine's load hits them alike.
#   scripts/start-cost.sh target/dist/cni-bridge /usr/lib/cni/bridge /bin/true
#   BLOCKS=8 RUNS=50 scripts/start-cost.sh A B     # medians over 8 blocks of 50 runs
# Needs perf (linux-perf) and /usr/bin/time. See README § Performance.
set -euo pipefail
BLOCKS="${BLOCKS:-8}"
RUNS="${RUNS:-50}"
echo "# $(date -u '+%F %T UTC'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A cpu faults
for _ in $(seq "$BLOCKS"); do
  for b in "$@"; do
    out=$(CNI_COMMAND=VERSION perf stat -x, -r "$RUNS" -e task-clock,page-faults "$b" \
      </dev/null 2>&1 >/dev/null)
    cpu[$b]+="$(grep task-clock <<<"$out" | cut -d, -f1) "
    faults[$b]+="$(grep page-faults <<<"$out" | cut -d, -f1) "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-40s %12s %12s %12s\n' binary "cpu ms" "page faults" "max RSS kB"
for b in "$@"; do
  rss=$(CNI_COMMAND=VERSION /usr/bin/time -f %M "$b" </dev/null 2>&1 >/dev/null | tail -1)
  printf '%-40s %12s %12s %12s\n' "$b" "$(median <<<"${cpu[$b]}")" \
    "$(median <<<"${faults[$b]}")" "$rss"
done
