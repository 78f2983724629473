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
# The earlier build has a target directory of its own, kept for the next comparison (its
# dependencies are built once). Not this tree's: cargo gives both trees' crate the same name in
# it, and the one built last would then be measured as both.
(cd "$work/tree" && CARGO_TARGET_DIR="$OLDPWD/target/compare-before" cargo build --release --bin tailscale-monitor -q)
cp target/compare-before/release/tailscale-monitor "$work/before"
cargo build --release --bin tailscale-monitor -q
# Different sources that give one binary: the comparison would measure nothing (the same code on
# both sides, `bench/compare.sh HEAD`, measures the noise and is allowed).
if cmp -s target/release/tailscale-monitor "$work/before" \
    && ! { [ "$(git rev-parse "$rev^{tree}")" = "$(git rev-parse 'HEAD^{tree}')" ] && git diff --quiet; }; then
    echo "bench/compare.sh: $rev and this tree differ, but their binaries do not" >&2
    exit 1
fi
export TM_BENCH_BEFORE="$work/before"
export TM_BENCH_SIZES="${TM_BENCH_SIZES:-1000,10000}"
echo "before: $(git rev-parse --short "$rev")   this: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
cargo test --release --test bench "${TM_BENCH_FILTER:-cost::}" -- --ignored --test-threads 1 --nocapture 2>/dev/null | grep -o 'BENCH.*'
