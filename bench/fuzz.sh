#!/usr/bin/env bash
# The fuzz-style property tests of every parser fed by the outside, at scale: N generated inputs
# per parser (default 100,000; the normal suite runs 1,000), release build, fixed seed.
#
#   bench/fuzz.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
TM_FUZZ_CASES=${1:-100000} cargo test --release --locked --lib fuzz_ -- --test-threads=2
