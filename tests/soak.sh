#!/usr/bin/env bash
# Soak: runs the README's test command (tests/run-all.sh) N times in a row with two busy loops
# spinning beside it, to prove the suite does not flake under load. The first COLD runs each start
# from a fresh clone of HEAD with an empty target/ (the daemon cache under ~/.cache stays warm);
# the rest reuse the last clone, warm. Prints one line per run and a summary; keeps each run's
# output under OUT. Exits non-zero if any run failed.
#
#   tests/soak.sh [N=10] [COLD=2]        OUT defaults to a new directory under /tmp
set -uo pipefail
N=${1:-10}
COLD=${2:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/tm-soak.XXXXXX)}
mkdir -p "$OUT"

busy=()
for _ in 1 2; do
  sh -c 'while :; do :; done' &
  busy+=($!)
done
clones=()
cleanup() {
  kill "${busy[@]}" 2>/dev/null
  for c in "${clones[@]}"; do rm -rf "$c"; done
}
trap cleanup EXIT

echo "soak: $N runs of tests/run-all.sh ($COLD cold) at $(git -C "$repo" rev-parse --short HEAD), two busy loops beside; logs in $OUT"
failed=0
clone=
for i in $(seq 1 "$N"); do
  if [ "$i" -le "$COLD" ] || [ -z "$clone" ]; then
    kind=cold
    [ -n "$clone" ] && rm -rf "$clone"
    clone=$(mktemp -d /tmp/tm-soak-clone.XXXXXX)
    clones+=("$clone")
    git clone -q "$repo" "$clone"
  else
    kind=warm
  fi
  start=$(date +%s)
  if (cd "$clone" && tests/run-all.sh) >"$OUT/run-$i.log" 2>&1; then
    result=PASS
  else
    result=FAIL
    failed=$((failed + 1))
  fi
  secs=$(($(date +%s) - start))
  line="run $i/$N $kind: $result in ${secs} s"
  echo "$line" | tee -a "$OUT/summary"
  if [ "$result" = FAIL ]; then
    grep -E "^test .*FAILED|panicked at|^error" "$OUT/run-$i.log" | head -20 | sed 's/^/    /'
  fi
done
echo "soak: $((N - failed))/$N passed" | tee -a "$OUT/summary"
[ "$failed" -eq 0 ]
