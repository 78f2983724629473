#!/usr/bin/env bash
# What a pass costs when nothing changed (check at 1,000/10,000/50,000 peers, beside the old
# `tailscale status --json | jq | sort | comm` pipeline against the same LocalAPI emulator socket),
# and `run` on a busy tailnet (one presence flap a second; beside a full pass per notify).
# Needs tests/setup/install-deps.sh (the real tailscale CLI) and GNU time.
#
#   bench/cost.sh        (TM_BENCH_SIZES=1000,10000,50000 TM_BENCH_BUSY_SIZES=1000,10000 TM_BENCH_SECS=60)
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup/install-deps.sh
. "${TM_CACHE:-$HOME/.cache/tailscale-monitor}/env"
command -v /usr/bin/time >/dev/null || { echo "bench/cost.sh: needs GNU time (apt install time)" >&2; exit 1; }
cargo test --release --test bench cost:: -- --ignored --test-threads 1 --nocapture 2>/dev/null | grep -o 'BENCH.*'
