#!/usr/bin/env bash
# Storm benchmark: 1,000 devices join at once (LocalAPI emulator), one `check` detects, records
# and delivers them through three channels to a loopback receiver. Needs GNU time.
#
#   bench/storm.sh            (TM_BENCH_STORM=1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test bench -- --ignored --exact storm::bench_storm --nocapture 2>/dev/null | grep '^BENCH'
