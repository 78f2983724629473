#!/usr/bin/env bash
# The control plane's largest accepted answers: a device list just under the 48 MiB cap and a
# policy just under the 4 MiB cap (the Admin API emulator), then that policy replaced by another;
# the peak RSS of each `check` (GNU time). Against the monitor unit's MemoryMax=512M.
#
#   bench/control_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test bench -- --ignored --exact control_memory::bench_control_peak_rss --nocapture 2>/dev/null | grep '^BENCH'
