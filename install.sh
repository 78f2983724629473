#!/usr/bin/env bash
# Builds and installs tailscale-monitor, then runs it once.
#
#   sudo ./install.sh                               # install; check this server's tailnet, or demo
#   sudo ALERT_EMAIL=you@example.com ./install.sh   # …and mail alerts through the local sendmail
#
# Installs /usr/local/bin/tailscale-monitor, the system user tailscale-monitor,
# /etc/tailscale-monitor/config.toml (root:tailscale-monitor 0640, never overwritten), the
# systemd unit (not started) and the privileged relay's socket unit (enabled and started: on
# tailscaled >= 1.104 it is how the unprivileged monitor reads who can reach this server). If this machine runs tailscaled, it then runs one `check`,
# which records the baseline; otherwise it runs `demo` against a simulated tailnet.
set -euo pipefail
cd "$(dirname "$0")"

# The build needs cargo (Rust >= 1.82) and a C compiler. Nothing is downloaded from a website:
# a missing toolchain is a plain error that says how to get one.
# shellcheck disable=SC1091
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
install: cargo (Rust >= 1.82) is needed to build tailscale-monitor and is not installed.
  Debian 13:  apt install cargo          (or: apt install rustup && rustup default stable)
  Debian 12:  its cargo is too old; install rustup as your site allows (https://rustup.rs),
              or build on another machine and copy target/release/tailscale-monitor here.
Then run ./install.sh again.
MSG
  exit 1
fi
if ! command -v cc >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential >/dev/null
fi

cargo build --release --locked
PREFIX=${PREFIX:-/usr/local}
install -D -m 0755 target/release/tailscale-monitor "$PREFIX/bin/tailscale-monitor"
# The man page and the shell completions, generated from the binary's own definitions.
bin="$PREFIX/bin/tailscale-monitor"
install -d "$PREFIX/share/man/man1" /usr/share/bash-completion/completions \
  /usr/share/zsh/vendor-completions /usr/share/fish/vendor_completions.d
"$bin" man > "$PREFIX/share/man/man1/tailscale-monitor.1"
"$bin" completions bash > /usr/share/bash-completion/completions/tailscale-monitor
"$bin" completions zsh > /usr/share/zsh/vendor-completions/_tailscale-monitor
"$bin" completions fish > /usr/share/fish/vendor_completions.d/tailscale-monitor.fish
conf=/etc/tailscale-monitor/config.toml
state=/var/lib/tailscale-monitor
# The service's own unprivileged user; the config is root:tailscale-monitor 0640.
user=tailscale-monitor
if ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir "$state" --shell /usr/sbin/nologin "$user"
  echo "install: created system user $user"
fi
install -d -m 0755 /etc/tailscale-monitor
if [ ! -f "$conf" ]; then
  install -m 0640 -o root -g "$user" examples/config.toml "$conf"
  if [ -n "${ALERT_EMAIL:-}" ]; then
    # Both go into TOML strings: only what an address and a host name can hold, nothing that
    # ends the string or the line.
    if ! [[ "$ALERT_EMAIL" =~ ^[A-Za-z0-9._%+=-]+@[A-Za-z0-9.-]+$ ]]; then
      echo "install: ALERT_EMAIL='$ALERT_EMAIL' is not a plain address like you@example.com" >&2
      rm -f "$conf"
      exit 1
    fi
    sender_host=$(hostname -f 2>/dev/null || hostname)
    [[ "$sender_host" =~ ^[A-Za-z0-9.-]+$ ]] || sender_host=localhost
    # The local MTA over loopback SMTP when it listens (works under the hardened unit, where a
    # set-ID sendmail cannot hand mail over), else its sendmail program.
    smtp=sendmail
    if (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then smtp=smtp://127.0.0.1:25; fi
    cat >> "$conf" <<CONF

[[notify]]
kind = "email"
to = ["$ALERT_EMAIL"]
from = "tailscale-monitor@$sender_host"
smtp = "$smtp"
CONF
  fi
  echo "install: wrote $conf"
elif ! runuser -u "$user" -- test -r "$conf"; then
  echo "install: warning: $user cannot read $conf; run: chgrp $user $conf && chmod 0640 $conf" >&2
fi
# State belongs to the service user (a root-owned state.db from an earlier install included).
# Not `chown -R` as root in a directory the service user controls: only directories and regular
# files of one link, never through a symlink (a hard link to a root-owned file stays root's).
install -d -m 0700 -o "$user" -g "$user" "$state"
find -P "$state" -xdev \( -type d -o -type f -links 1 \) ! -user "$user" -exec chown -h "$user:$user" {} +
units=(tailscale-monitor.service tailscale-monitor-privileged.socket tailscale-monitor-privileged@.service tailscale-monitor-guard-restore.service)
if [ -d /etc/systemd/system ]; then
  for u in "${units[@]}"; do
    sed "s|/usr/local/bin/tailscale-monitor|$PREFIX/bin/tailscale-monitor|" "contrib/$u" > "/etc/systemd/system/$u"
    chmod 0644 "/etc/systemd/system/$u"
  done
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload
    # The relay answers only root and the tailscale-monitor group, one request per connection.
    systemctl enable --now tailscale-monitor-privileged.socket
    echo "install: privileged relay enabled (tailscale-monitor-privileged.socket)"
    # The guard fails closed from boot; it restores only what the root side applied.
    systemctl enable tailscale-monitor-guard-restore.service
  else
    echo "install: systemd is not running: enable tailscale-monitor-privileged.socket once it is, or run"
    echo "  $PREFIX/bin/tailscale-monitor privileged --listen /run/tailscale-monitor/privileged.sock --group $user"
    echo "as root from your init system (README: Access on tailscaled 1.104)"
  fi
  echo "install: systemd unit installed; start it with: systemctl enable --now tailscale-monitor"
fi
as_service() { runuser -u "$user" -- "$@"; }
as_service "$PREFIX/bin/tailscale-monitor" --config "$conf" config check >/dev/null

sock=$(as_service "$PREFIX/bin/tailscale-monitor" --config "$conf" config check 2>/dev/null | sed -n 's/^socket = "\(.*\)"$/\1/p')
if [ -S "$sock" ]; then
  echo "install: tailscaled found at $sock — running one check (records the baseline):"
  # As the service user, so that the state it records is the service's.
  exec runuser -u "$user" -- "$PREFIX/bin/tailscale-monitor" --config "$conf" check
else
  echo "install: no tailscaled on this machine — here is the demo:"
  exec "$PREFIX/bin/tailscale-monitor" demo
fi
