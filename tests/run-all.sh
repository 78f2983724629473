#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real servers the suites need (cached under
# ~/.cache/tailscale-monitor), checks formatting and lints, then runs every test including the
# real-server ones that plain `cargo test` leaves out.
set -euo pipefail
cd "$(dirname "$0")/.."

tests/setup/install-deps.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
# shellcheck disable=SC1091
. "${TM_CACHE:-$HOME/.cache/tailscale-monitor}/env"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --include-ignored --skip bench_
