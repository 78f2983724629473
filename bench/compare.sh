#!/usr/bin/env bash
# Before and after: bench/cost.sh's measures for this tree and for an earlier commit, the two
# builds measured alternately in the same run (a `check` that finds nothing new, best of 5 each;
# `run` idle and on a busy tailnet, one after the other).
#
#   bench/compare.sh REV      (TM_BENCH_SIZES=1000,10000 TM_BENCH_BUSY_SIZES=1000,10000 TM_BENCH_SECS=60
#                              TM_BENCH_FILTER=cost:: — e.g. cost::bench_nothing_new_check alone)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/compare.sh REV}
tests/setup/install-deps.sh
. "${TM_CACHE:-$HOME/.cache/tailscale-monitor}/env"
command -v /usr/bin/time >/dev/null || { echo "bench/compare.sh: needs GNU time (apt install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" 2>/dev/null || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/tree" "$rev" >/dev/null
# The earlier build shares this tree's target directory (its dependencies are built once).
(cd "$work/tree" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --bin tailscale-monitor -q)
cp target/release/tailscale-monitor "$work/before"
export TM_BENCH_BEFORE="$work/before"
export TM_BENCH_SIZES="${TM_BENCH_SIZES:-1000,10000}"
echo "before: $(git rev-parse --short "$rev")   this: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
cargo test --release --test bench "${TM_BENCH_FILTER:-cost::}" -- --ignored --test-threads 1 --nocapture 2>/dev/null | grep -o 'BENCH.*'
