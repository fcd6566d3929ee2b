#!/usr/bin/env bash
# Install Docker Compose (v2 CLI, standalone `docker-compose`) for the compose test, once,
# from its Go module. `docker-compose config` renders and validates deploy/compose.yaml
# against the Compose specification without a Docker engine.
#
#   bash deploy/docker/install-compose.sh      # prints the path of the binary
#
# Idempotent and cached: built once per version into
# $NATSBRIDGE_CACHE_DIR/tools/docker-compose-VERSION/docker-compose (default
# ~/.cache/natsbridge) and linked as $NATSBRIDGE_CACHE_DIR/bin/docker-compose, where
# tests/deploy looks for it (after `docker compose` and `docker-compose` on PATH).
# `go install module@version` refuses this module (its go.mod has exclude/replace
# directives), so it is built inside a copy of the module's source. The first build takes
# a few minutes.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${NATSBRIDGE_CACHE_DIR:-$HOME/.cache/natsbridge}"
BIN="$CACHE/bin"
COMPOSE_VERSION="${COMPOSE_VERSION:-v5.6.0}"
MODULE="github.com/docker/compose/v${COMPOSE_VERSION:1:1}"
DEST="$CACHE/tools/docker-compose-$COMPOSE_VERSION/docker-compose"

log() { printf '[install-compose] %s\n' "$*" >&2; }

built_ok() { [ -x "$1" ] && "$1" version --short 2>/dev/null | grep -qx "${COMPOSE_VERSION#v}"; }

if built_ok "$DEST"; then
  mkdir -p "$BIN"
  ln -sfn "$DEST" "$BIN/docker-compose"
  echo "$DEST"
  exit 0
fi
command -v go >/dev/null || {
  log "go not found: install Go (or Docker Compose)"
  exit 1
}

mkdir -p "$BIN" "$CACHE/tools"
tmp="$(mktemp -d "$CACHE/tools/.build-compose.XXXXXX")"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-mod=mod CGO_ENABLED=0
log "building docker-compose $COMPOSE_VERSION from $MODULE (a few minutes the first time) ..."
start=$SECONDS
src="$(go mod download -json "$MODULE@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "$src" ] || {
  log "go mod download $MODULE@$COMPOSE_VERSION failed"
  exit 1
}
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
(cd "$tmp/src" && go build -trimpath -ldflags="-s -w -X $MODULE/internal.Version=$COMPOSE_VERSION" \
  -o "$tmp/out/docker-compose" ./cmd)
built_ok "$tmp/out/docker-compose" || {
  log "the docker-compose just built does not report $COMPOSE_VERSION"
  exit 1
}
rm -rf "$(dirname "$DEST")"
mv "$tmp/out" "$(dirname "$DEST")"
ln -sfn "$DEST" "$BIN/docker-compose"
log "built docker-compose $COMPOSE_VERSION in $((SECONDS - start))s"
echo "$DEST"
