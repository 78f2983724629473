#!/usr/bin/env bash
# Installs what the real-server test suites need, caching built daemons outside the repo so a warm
# run rebuilds nothing. Idempotent. Prints where everything is; fails loudly with the reason.
#
#   aiosmtpd                  real SMTP server (PyPI), into a venv under $CACHE
#   tailscaled + tailscale    at TS_NEW (>= 1.102) and TS_OLD (< 1.98), `go install` from the Go proxy
#   headscale                 at HS_VERSION, `go install`
#   msmtp                     from Debian: a real sendmail-compatible MTA client for `smtp = "sendmail"`
#   prometheus-alertmanager   from Debian (skip with TM_WITH_ALERTMANAGER=0)
set -euo pipefail

CACHE=${TM_CACHE:-$HOME/.cache/tailscale-monitor}
TS_NEW=${TS_NEW:-v1.102.5}
TS_OLD=${TS_OLD:-v1.96.5}
HS_VERSION=${HS_VERSION:-v0.29.0}
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

# --- Rust toolchain (a fresh Debian machine may have none) ---------------------------------------
if ! need cargo; then
  apt_install curl ca-certificates build-essential
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# --- Python + aiosmtpd --------------------------------------------------------------------------
if ! need python3; then apt_install python3 python3-venv; fi
if [ ! -x "$CACHE/venv/bin/aiosmtpd" ]; then
  python3 -m venv "$CACHE/venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$CACHE/venv"; }
  "$CACHE/venv/bin/pip" install -q 'aiosmtpd>=1.4'
fi

# --- Go toolchain -------------------------------------------------------------------------------
# tailscale 1.102 and headscale 0.29 need Go >= 1.26.6. Debian 12's golang-go is far older, so when
# the machine's go is missing or too old, fetch the toolchain from the Go module proxy (the same
# module `GOTOOLCHAIN=auto` uses) into the cache.
GO_VERSION=${GO_VERSION:-1.26.8}
go_ok() { command -v go >/dev/null 2>&1 && go version | awk '{v=$3; sub("go","",v); split(v,a,"."); exit !((a[1]>1)||(a[1]==1&&a[2]>26)||(a[1]==1&&a[2]==26&&a[3]>=6))}'; }
ensure_go() {
  go_ok && return 0
  if [ ! -x "$CACHE/go/bin/go" ]; then
    apt_install curl unzip ca-certificates
    local zip="$CACHE/go-toolchain.zip"
    curl -fsSL -o "$zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_VERSION.linux-amd64.zip"
    rm -rf "$CACHE/go-unpack" && mkdir -p "$CACHE/go-unpack"
    unzip -q "$zip" -d "$CACHE/go-unpack"
    rm -rf "$CACHE/go" && mv "$CACHE/go-unpack/golang.org/toolchain@v0.0.1-go$GO_VERSION.linux-amd64" "$CACHE/go"
    chmod +x "$CACHE/go/bin/"* "$CACHE/go/pkg/tool/"*/* 2>/dev/null || true
    rm -rf "$CACHE/go-unpack" "$zip"
  fi
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

# --- Alertmanager -------------------------------------------------------------------------------
# promtool (package prometheus) checks the /metrics exposition.
if [ "${TM_WITH_ALERTMANAGER:-1}" = 1 ]; then apt_install prometheus-alertmanager prometheus; fi

# --- Environment for the suites -----------------------------------------------------------------
cat > "$CACHE/env" <<ENV
export TM_AIOSMTPD=$CACHE/venv/bin/python
export TM_TAILSCALED_NEW=$CACHE/bin/tailscaled-$TS_NEW
export TM_TAILSCALE_NEW=$CACHE/bin/tailscale-$TS_NEW
export TM_TAILSCALED_OLD=$CACHE/bin/tailscaled-$TS_OLD
export TM_TAILSCALE_OLD=$CACHE/bin/tailscale-$TS_OLD
export TM_HEADSCALE=$CACHE/bin/headscale-$HS_VERSION
ENV
echo "install-deps: ready ($CACHE/env)" >&2
