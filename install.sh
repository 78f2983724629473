#!/usr/bin/env bash
# Builds and installs tailscale-monitor, then runs it once.
#
#   sudo ./install.sh                               # install; check this server's tailnet, or demo
#   sudo ALERT_EMAIL=you@example.com ./install.sh   # …and mail alerts through the local sendmail
#
# Installs /usr/local/bin/tailscale-monitor, /etc/tailscale-monitor/config.toml (never overwritten)
# and the systemd unit (not started). If this machine runs tailscaled, it then runs one `check`,
# which records the baseline; otherwise it runs `demo` against a simulated tailnet.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && ! { command -v curl && command -v cc; } >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates build-essential >/dev/null
  fi
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  . "$HOME/.cargo/env"
fi

cargo build --release --locked
PREFIX=${PREFIX:-/usr/local}
install -D -m 0755 target/release/tailscale-monitor "$PREFIX/bin/tailscale-monitor"
conf=/etc/tailscale-monitor/config.toml
install -d -m 0755 /etc/tailscale-monitor
if [ ! -f "$conf" ]; then
  install -m 0640 examples/config.toml "$conf"
  if [ -n "${ALERT_EMAIL:-}" ]; then
    cat >> "$conf" <<CONF

[[notify]]
kind = "email"
to = ["$ALERT_EMAIL"]
from = "tailscale-monitor@$(hostname -f 2>/dev/null || hostname)"
smtp = "sendmail"
CONF
  fi
  echo "install: wrote $conf"
fi
if [ -d /etc/systemd/system ] && [ -f contrib/tailscale-monitor.service ]; then
  install -m 0644 contrib/tailscale-monitor.service /etc/systemd/system/tailscale-monitor.service
  command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload 2>/dev/null || true
  echo "install: systemd unit installed; start it with: systemctl enable --now tailscale-monitor"
fi
"$PREFIX/bin/tailscale-monitor" --config "$conf" config check >/dev/null

sock=$("$PREFIX/bin/tailscale-monitor" --config "$conf" config check 2>/dev/null | sed -n 's/^socket = "\(.*\)"$/\1/p')
if [ -S "$sock" ]; then
  echo "install: tailscaled found at $sock — running one check (records the baseline):"
  exec "$PREFIX/bin/tailscale-monitor" --config "$conf" check
else
  echo "install: no tailscaled on this machine — here is the demo:"
  exec "$PREFIX/bin/tailscale-monitor" demo
fi
