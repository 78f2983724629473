#!/usr/bin/env bash
# Builds the Debian package: target/debian/tailscale-monitor_<version>_<arch>.deb.
#   contrib/deb/build.sh [--deb-version V]     (needs cargo-deb: cargo install cargo-deb)
# The man page and the completions are generated from the clap definitions by the binary itself;
# the unit is contrib/tailscale-monitor.service with the binary in /usr/bin.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-deb >/dev/null || {
    echo "contrib/deb/build.sh: needs cargo-deb (cargo install cargo-deb --locked)" >&2
    exit 1
}
cargo build --release --locked
out=target/deb-assets
rm -rf "$out" && mkdir -p "$out"
# cargo-deb finds the binary in the target directory too (CARGO_TARGET_DIR honoured).
bin="${CARGO_TARGET_DIR:-target}/release/tailscale-monitor"
"$bin" man | gzip -9n > "$out/tailscale-monitor.1.gz"
"$bin" completions bash > "$out/tailscale-monitor.bash"
"$bin" completions zsh > "$out/_tailscale-monitor"
"$bin" completions fish > "$out/tailscale-monitor.fish"
for u in tailscale-monitor.service tailscale-monitor-privileged.socket tailscale-monitor-privileged@.service tailscale-monitor-guard-restore.service; do
    sed 's|/usr/local/bin/tailscale-monitor|/usr/bin/tailscale-monitor|; s|(install.sh creates it)|(the package creates it)|' \
        "contrib/$u" > "$out/$u"
done
cargo deb --no-build --locked "$@"
