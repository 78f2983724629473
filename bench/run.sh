#!/usr/bin/env bash
# Scale benchmark: tailscale-monitor's parse + diff (+ store) against the old cron script's
# `jq | sort | comm` pipeline, on generated status documents. Needs jq and GNU time.
#
#   bench/run.sh [N ...]        (default: 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000}")
[ $# -eq 0 ] && sizes=(1000 10000)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cargo build --release --example parse_diff -q
bin=target/release/examples/parse_diff
reps=5

peak() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }  # peak RSS in KiB

# The old script, as it runs from cron: extract "IP hostname" lines, sort, keep the new ones.
old_pipeline() { # old.json new.json
  jq -r '.Peer[]? | "\(.TailscaleIPs[0]) \(.HostName)"' "$1" | sort > "$work/old.txt"
  jq -r '.Peer[]? | "\(.TailscaleIPs[0]) \(.HostName)"' "$2" | sort > "$work/new.txt"
  comm -13 "$work/old.txt" "$work/new.txt"
}
export -f old_pipeline; export work

printf '| peers | tailscale-monitor parse (ms/doc) | diff (ms) | store pass (ms) | peak RSS (MiB) | jq+sort+comm (ms) | peak RSS (MiB) |\n|---|---|---|---|---|---|---|\n'
for n in "${sizes[@]}"; do
  python3 bench/gen-status.py "$n" > "$work/a.json"
  python3 bench/gen-status.py "$n" 1 > "$work/b.json"
  best_p=""; best_d=""; best_s=""
  for _ in $(seq $reps); do
    line=$($bin "$work/a.json" "$work/b.json" --store)
    p=$(sed -n 's/.*parse_ms=\([0-9.]*\).*/\1/p' <<<"$line")
    d=$(sed -n 's/.*diff_ms=\([0-9.]*\).*/\1/p' <<<"$line")
    s=$(sed -n 's/.*store_pass_ms=\([0-9.]*\).*/\1/p' <<<"$line")
    best_p=$(printf '%s\n%s\n' "$p" "${best_p:-$p}" | sort -g | head -1)
    best_d=$(printf '%s\n%s\n' "$d" "${best_d:-$d}" | sort -g | head -1)
    best_s=$(printf '%s\n%s\n' "$s" "${best_s:-$s}" | sort -g | head -1)
  done
  rss=$(peak "$bin" "$work/a.json" "$work/b.json")
  best_j=""
  for _ in $(seq $reps); do
    s=$(date +%s%N); bash -c 'old_pipeline "$0" "$1" >/dev/null' "$work/a.json" "$work/b.json"; e=$(date +%s%N)
    j=$(( (e - s) / 1000000 ))
    best_j=$(printf '%s\n%s\n' "$j" "${best_j:-$j}" | sort -g | head -1)
  done
  jrss=$(peak jq -r '.Peer[]? | "\(.TailscaleIPs[0]) \(.HostName)"' "$work/b.json")
  printf '| %s | %s | %s | %s | %.1f | %s | %.1f |\n' "$n" "$best_p" "$best_d" "$best_s" \
    "$(echo "$rss/1024" | bc -l)" "$best_j" "$(echo "$jrss/1024" | bc -l)"
done
