#!/usr/bin/env bash
# Installs what the real-server test suites need, caching built daemons outside the repo so a warm
# run rebuilds nothing. Idempotent. Prints where everything is; fails loudly with the reason.
#
#   aiosmtpd                  real SMTP server (PyPI), into a venv under $CACHE
#   apprise                   the real Apprise CLI (PyPI), same venv
#   matrix-synapse            a real Matrix homeserver (PyPI), in $CACHE/synapse
#   tailscaled + tailscale    at TS_NEW (>= 1.102) and TS_OLD (< 1.98), `go install` from the Go proxy
#   tailscaled + tailscale    at TS_CUR (1.104, the current release: the netmap left the IPN bus),
#                             built from its module source with one replaced dependency (below)
#   headscale                 at HS_VERSION, `go install`
#   msmtp                     from Debian: a real sendmail-compatible MTA client for `smtp = "sendmail"`
#   prometheus-alertmanager   from Debian (skip with TM_WITH_ALERTMANAGER=0)
#   cargo-deb                 from crates.io, into $CACHE/cargo-deb (the Debian package test)
#   nftables, socat, iproute2 from Debian: the guard's kernel-mode tests in network namespaces
#   chromium, chromium-driver from Debian, selenium (PyPI, in the venv): the web view in a real browser
#   rsyslog, rsyslog-gnutls,  from Debian: the syslog export's real collector, over TLS and RELP too
#   rsyslog-relp              (journald comes with systemd)
set -euo pipefail

CACHE=${TM_CACHE:-$HOME/.cache/tailscale-monitor}
TS_NEW=${TS_NEW:-v1.102.5}
TS_OLD=${TS_OLD:-v1.96.5}
TS_CUR=${TS_CUR:-v1.104.2}
HS_VERSION=${HS_VERSION:-v0.29.3}
mkdir -p "$CACHE/bin"

need() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then echo "install-deps: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Rust toolchain ------------------------------------------------------------------------------
# Never fetched from a website: the machine's cargo (rustup's, or Debian's `cargo` where it is new
# enough) is required, and its absence is a plain error saying how to get one.
# shellcheck disable=SC1091
if ! need cargo && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
if ! need cargo; then
  cat >&2 <<'MSG'
install-deps: cargo (Rust >= 1.82) is required and is not installed.
  Debian 13:  apt install cargo rustfmt rust-clippy    (or: apt install rustup && rustup default stable)
  Debian 12:  its cargo is too old; install rustup as your site allows (https://rustup.rs), then
              rustup component add rustfmt clippy
MSG
  exit 1
fi
need cc || apt_install build-essential

# --- Python + aiosmtpd --------------------------------------------------------------------------
if ! need python3; then apt_install python3 python3-venv; fi
if [ ! -x "$CACHE/venv/bin/aiosmtpd" ]; then
  python3 -m venv "$CACHE/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$CACHE/venv"; }
  "$CACHE/venv/bin/pip" install -q 'aiosmtpd>=1.4'
fi
# Selenium (PyPI): drives Debian's Chromium through chromium-driver for the web view's tests.
"$CACHE/venv/bin/python" -c 'import selenium' 2>/dev/null || "$CACHE/venv/bin/pip" install -q 'selenium>=4.20'
# Apprise (PyPI): the real CLI behind the `apprise` channel.
[ -x "$CACHE/venv/bin/apprise" ] || "$CACHE/venv/bin/pip" install -q 'apprise>=1.9'
# Synapse (PyPI, matrix-synapse): a real Matrix homeserver for the `matrix` channel, in a venv
# of its own (its dependencies are many; about 30 s on a cold cache).
if [ ! -x "$CACHE/synapse/bin/register_new_matrix_user" ]; then
  python3 -m venv "$CACHE/synapse"
  "$CACHE/synapse/bin/pip" install -q 'matrix-synapse>=1.100'
fi


# --- Go toolchain -------------------------------------------------------------------------------
# tailscale 1.102 and headscale 0.29 need Go >= 1.26.6. When the machine's go is older, Go's own
# toolchain mechanism gets the newer one through the Go module proxy (GOTOOLCHAIN, Go >= 1.21), or,
# for an older go such as Debian 12's golang-go, `go mod download` of the same toolchain module.
# Nothing is fetched by URL.
GO_VERSION=${GO_VERSION:-1.26.8}
go_ok() { command -v go >/dev/null 2>&1 && go version | awk '{v=$3; sub("go","",v); split(v,a,"."); exit !((a[1]>1)||(a[1]==1&&a[2]>26)||(a[1]==1&&a[2]==26&&a[3]>=6))}'; }
go_minor() { go env GOVERSION 2>/dev/null | awk '{v=$1; sub("go","",v); split(v,a,"."); print a[2]+0}'; }
ensure_go() {
  go_ok && return 0
  if [ -x "$CACHE/go/bin/go" ]; then export PATH="$CACHE/go/bin:$PATH" GOTOOLCHAIN=local; return 0; fi
  need go || apt_install golang-go ca-certificates
  if [ "$(go_minor)" -ge 21 ]; then
    echo "install-deps: go $(go env GOVERSION) is too old; switching to go$GO_VERSION through the module proxy" >&2
    export GOTOOLCHAIN="go$GO_VERSION"
    go version >/dev/null || { echo "install-deps: GOTOOLCHAIN=go$GO_VERSION failed" >&2; exit 1; }
    return 0
  fi
  echo "install-deps: go $(go env GOVERSION) is too old; downloading the go$GO_VERSION toolchain module" >&2
  local mod dir
  mod="golang.org/toolchain@v0.0.1-go$GO_VERSION.$(go env GOHOSTOS)-$(go env GOHOSTARCH)"
  dir=$(cd "$(mktemp -d)" && GO111MODULE=on go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "install-deps: go mod download $mod failed" >&2; exit 1; }
  rm -rf "$CACHE/go" && cp -r "$dir" "$CACHE/go" && chmod -R u+w "$CACHE/go"
  chmod +x "$CACHE/go/bin/"* "$CACHE/go/pkg/tool/"*/* 2>/dev/null || true
  export PATH="$CACHE/go/bin:$PATH" GOTOOLCHAIN=local
}

# --- Go daemons ---------------------------------------------------------------------------------
go_install() { # name module version
  local name=$1 module=$2 version=$3 out="$CACHE/bin/$1-$3"
  [ -x "$out" ] && return 0
  ensure_go
  local gobin; gobin=$(mktemp -d)
  echo "install-deps: building $module@$version (cached afterwards in $out)" >&2
  if ! GOBIN=$gobin GOFLAGS=-mod=mod CGO_ENABLED=0 go install "$module@$version"; then
    echo "install-deps: could not build $module@$version with go install" >&2; exit 1
  fi
  mv "$gobin/$name" "$out"; rmdir "$gobin"
}
if [ "${TM_SKIP_DAEMONS:-0}" != 1 ]; then
  for v in "$TS_NEW" "$TS_OLD"; do
    go_install tailscaled tailscale.com/cmd/tailscaled "$v"
    go_install tailscale tailscale.com/cmd/tailscale "$v"
  done
  # tailscale 1.104.2 needs Go >= 1.27.1 (GOTOOLCHAIN, through the module proxy) and pins a gvisor
  # version the proxy does not serve: it is built from its module source with 1.102.5's gvisor
  # instead, minus the one Windows-only line that needs the newer gvisor (tests/README.md).
  if [ ! -x "$CACHE/bin/tailscaled-$TS_CUR" ] || [ ! -x "$CACHE/bin/tailscale-$TS_CUR" ]; then
    ensure_go
    echo "install-deps: building tailscale.com@$TS_CUR from its module source (cached afterwards)" >&2
    cur_go=${TS_CUR_GO:-go1.27.3}
    ts_dir=$(GOTOOLCHAIN=$cur_go GOFLAGS=-mod=mod go mod download -json "tailscale.com@$TS_CUR" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$ts_dir" ] || { echo "install-deps: could not download tailscale.com@$TS_CUR" >&2; exit 1; }
    src=$(mktemp -d)
    cp -r "$ts_dir/." "$src" && chmod -R u+w "$src"
    sed -i '/opts.ClockResolution = 500 \* time.Microsecond/d' "$src/wgengine/netstack/netstack.go"
    (cd "$src" \
      && GOTOOLCHAIN=$cur_go go mod edit -replace gvisor.dev/gvisor=gvisor.dev/gvisor@v0.0.0-20260224225140-573d5e7127a8 \
      && GOTOOLCHAIN=$cur_go GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$CACHE/bin/tailscaled-$TS_CUR.tmp" ./cmd/tailscaled \
      && GOTOOLCHAIN=$cur_go GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$CACHE/bin/tailscale-$TS_CUR.tmp" ./cmd/tailscale) \
      || { echo "install-deps: could not build tailscale.com@$TS_CUR" >&2; exit 1; }
    rm -rf "$src"
    mv "$CACHE/bin/tailscaled-$TS_CUR.tmp" "$CACHE/bin/tailscaled-$TS_CUR"
    mv "$CACHE/bin/tailscale-$TS_CUR.tmp" "$CACHE/bin/tailscale-$TS_CUR"
  fi
  # `go install` of headscale asks the proxy for the module's version list (a deprecation check),
  # which the proxy refuses; download the exact version and build it from its own module instead.
  if [ ! -x "$CACHE/bin/headscale-$HS_VERSION" ]; then
    ensure_go
    echo "install-deps: building headscale@$HS_VERSION" >&2
    hs_dir=$(go mod download -json "github.com/juanfont/headscale@$HS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$hs_dir" ] || { echo "install-deps: could not download headscale@$HS_VERSION" >&2; exit 1; }
    (cd "$hs_dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$CACHE/bin/headscale-$HS_VERSION.tmp" ./cmd/headscale) \
      || { echo "install-deps: could not build headscale@$HS_VERSION" >&2; exit 1; }
    mv "$CACHE/bin/headscale-$HS_VERSION.tmp" "$CACHE/bin/headscale-$HS_VERSION"
  fi
fi

# --- msmtp ---------------------------------------------------------------------------------------
# msmtp (not msmtp-mta: it must not take over /usr/sbin/sendmail) for the sendmail transport.
apt_install msmtp
# systemd-analyze and systemd-socket-activate, for the privileged relay's units.
command -v systemd-socket-activate >/dev/null 2>&1 || apt_install systemd

# --- The guard ---------------------------------------------------------------------------------
# nft (the guard's table, applied by the privileged relay), socat (the unix-socket bridge that
# lets kernel-mode nodes in network namespaces reach headscale on loopback), iproute2 (ip netns).
apt_install nftables socat iproute2 curl

# --- Alertmanager -------------------------------------------------------------------------------
# promtool (package prometheus) checks the /metrics exposition.
apt_install chromium chromium-driver rsyslog rsyslog-gnutls rsyslog-relp openssl
if [ "${TM_WITH_ALERTMANAGER:-1}" = 1 ]; then apt_install prometheus-alertmanager prometheus; fi

# --- Test accounts ------------------------------------------------------------------------------
# The 1.104 suites run the monitor unprivileged, beside the privileged relay (run as root): the
# account tmtest-mon is in the relay's group tmtest-relay, tmtest-other is not.
if [ "$(id -u)" = 0 ]; then
  getent group tmtest-relay >/dev/null || groupadd --system tmtest-relay
  for u in tmtest-mon tmtest-other; do
    getent passwd "$u" >/dev/null \
      || useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
  done
  usermod -aG tmtest-relay tmtest-mon
elif ! getent passwd tmtest-mon >/dev/null; then
  echo "install-deps: the accounts tmtest-mon and tmtest-other are missing: run this once as root" >&2
  exit 1
fi

# --- Environment for the suites -----------------------------------------------------------------
# --- cargo-deb (crates.io), for tests/deb.rs ------------------------------------------------------
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-3.8.0}
if [ ! -x "$CACHE/cargo-deb/bin/cargo-deb" ]; then
  cargo install --quiet --locked --root "$CACHE/cargo-deb" cargo-deb --version "$CARGO_DEB_VERSION"
fi

cat > "$CACHE/env" <<ENV
export PATH=$CACHE/cargo-deb/bin:\$PATH
export TM_AIOSMTPD=$CACHE/venv/bin/python
export TM_TAILSCALED_NEW=$CACHE/bin/tailscaled-$TS_NEW
export TM_TAILSCALE_NEW=$CACHE/bin/tailscale-$TS_NEW
export TM_TAILSCALED_OLD=$CACHE/bin/tailscaled-$TS_OLD
export TM_TAILSCALE_OLD=$CACHE/bin/tailscale-$TS_OLD
export TM_TAILSCALED_CUR=$CACHE/bin/tailscaled-$TS_CUR
export TM_TAILSCALE_CUR=$CACHE/bin/tailscale-$TS_CUR
export TM_HEADSCALE=$CACHE/bin/headscale-$HS_VERSION
export TM_APPRISE=$CACHE/venv/bin/apprise
export TM_SYNAPSE_VENV=$CACHE/synapse
export TM_CHROMIUM=/usr/bin/chromium
export TM_CHROMEDRIVER=/usr/bin/chromedriver
ENV
echo "install-deps: ready ($CACHE/env)" >&2
