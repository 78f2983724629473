#!/usr/bin/env bash
# Messages sent by presence watches: 100 short flaps, 10 outages past offline_after, and a storm of
# 50 watched devices with this server offline, against the LocalAPI emulator and a loopback
# webhook receiver, beside what one message per state change would send.
#
#   bench/presence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test bench -- --ignored --exact presence::bench_presence_messages --nocapture 2>/dev/null | grep -o 'BENCH.*'
