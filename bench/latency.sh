#!/usr/bin/env bash
# Detection latency against real daemons (headscale + tailscaled 1.102.5 on loopback, aiosmtpd),
# the latency of a policy edit that opens the server (tailscaled 1.104.2 through the privileged
# relay with the monitor unprivileged, 1.102.5 and 1.96.5, side by side in one run),
# the guard's approval-to-connection time (kernel mode, root), and the idle cost of `run`.
# Needs tests/setup/install-deps.sh.
#
#   bench/latency.sh            (TM_BENCH_JOINS=20, TM_BENCH_IDLE_SECS=120)
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup/install-deps.sh
. "${TM_CACHE:-$HOME/.cache/tailscale-monitor}/env"
cargo test --release --test bench -- --ignored --exact latency::bench_detection_latency --nocapture 2>/dev/null | grep '^BENCH'
cargo test --release --test bench -- --ignored --exact latency::bench_access_latency --nocapture 2>/dev/null | grep '^BENCH'
cargo test --release --test bench -- --ignored --exact latency::bench_guard_approve_to_connect --nocapture 2>/dev/null | grep '^BENCH'
