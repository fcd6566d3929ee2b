#!/usr/bin/env bash
# Install promtool (Prometheus's rule checker and rule unit tester) for the chart's alert
# tests, once, from Debian's `prometheus` package: the package is downloaded and only its
# promtool extracted (no service, no dependencies, nothing installed system-wide).
#
#   bash deploy/helm/install-promtool.sh      # prints the path of promtool
#
# Idempotent and cached: $NATSBRIDGE_CACHE_DIR/tools/promtool-VERSION/promtool (default
# ~/.cache/natsbridge), linked as $NATSBRIDGE_CACHE_DIR/bin/promtool, where tests/deploy
# looks for it. A promtool already on PATH is used as is.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${NATSBRIDGE_CACHE_DIR:-$HOME/.cache/natsbridge}"
BIN="$CACHE/bin"

log() { printf '[install-promtool] %s\n' "$*" >&2; }
works() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

if works "$BIN/promtool"; then
  readlink -f "$BIN/promtool"
  exit 0
fi
if command -v promtool >/dev/null && works "$(command -v promtool)"; then
  command -v promtool
  exit 0
fi
command -v apt-get >/dev/null || {
  log "apt-get not found: put promtool (from Prometheus) on PATH"
  exit 1
}

candidate() { apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p'; }
version="$(candidate)"
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q >&2
  version="$(candidate)"
fi
[ -n "$version" ] && [ "$version" != "(none)" ] || {
  log "no 'prometheus' package in this machine's apt sources: put promtool on PATH"
  exit 1
}

DEST="$CACHE/tools/promtool-${version//[^A-Za-z0-9.+~-]/_}/promtool"
mkdir -p "$BIN" "$CACHE/tools"
if ! works "$DEST"; then
  tmp="$(mktemp -d "$CACHE/tools/.promtool.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading Debian's prometheus $version for its promtool ..."
  (cd "$tmp" && apt-get download -q "prometheus=$version" >&2)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  works "$tmp/root/usr/bin/promtool" || {
    log "the package's promtool does not run"
    exit 1
  }
  mkdir -p "$(dirname "$DEST")"
  mv "$tmp/root/usr/bin/promtool" "$DEST"
fi
ln -sfn "$DEST" "$BIN/promtool"
echo "$DEST"
