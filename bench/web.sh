#!/usr/bin/env bash
# What a page of the web view costs at 1,000 and 10,000 devices, beside `tailscale-monitor devices`
# on the same store (bench/web.rs).
#
#   bench/web.sh        (TM_BENCH_SIZES=1000,10000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test bench web:: -- --ignored --test-threads 1 --nocapture 2>/dev/null | grep -o 'BENCH.*'
