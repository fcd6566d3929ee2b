#!/usr/bin/env bash
# Install the real `helm` (v3) for the chart tests, once, through the Go module proxy.
#
#   bash deploy/helm/install-helm.sh      # prints the path of the helm binary
#
# Idempotent and cached: the binary is built once per version into
# $NATSBRIDGE_CACHE_DIR/tools/helm-VERSION/helm (default ~/.cache/natsbridge) and linked
# as $NATSBRIDGE_CACHE_DIR/bin/helm, where tests/deploy looks for it. A helm already on
# PATH with the same major version is used as is. The first build takes a few minutes.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${NATSBRIDGE_CACHE_DIR:-$HOME/.cache/natsbridge}"
BIN="$CACHE/bin"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
DEST="$CACHE/tools/helm-$HELM_VERSION/helm"

log() { printf '[install-helm] %s\n' "$*" >&2; }

# A binary counts only if it reports the version it was built as (see the ldflags below).
built_ok() { [ -x "$1" ] && [ "$("$1" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; }

if built_ok "$DEST"; then
  mkdir -p "$BIN"
  ln -sfn "$DEST" "$BIN/helm"
  echo "$DEST"
  exit 0
fi
if [ "${NATSBRIDGE_HELM_FROM_PATH:-1}" = 1 ] && command -v helm >/dev/null &&
  helm version --template '{{.Version}}' 2>/dev/null | grep -q '^v3\.'; then
  command -v helm
  exit 0
fi
command -v go >/dev/null || {
  log "go not found: install Go (or put helm v3 on PATH)"
  exit 1
}

mkdir -p "$BIN" "$CACHE/tools"
tmp="$(mktemp -d "$CACHE/tools/.build-helm.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-mod=mod CGO_ENABLED=0
log "building helm $HELM_VERSION with go install (a few minutes the first time) ..."
start=$SECONDS
# The ldflags of helm's own Makefile: its version, and the Kubernetes version it assumes
# without a cluster (from the k8s.io/client-go it is built with; else v1.20, and charts
# with a kubeVersion constraint fail to render).
src="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p' "$src/go.mod")"
read -r k8s_major k8s_minor <<<"$client_go"
k8s_major=$((k8s_major + 1))
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done
GOBIN="$tmp" go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
built_ok "$tmp/helm" || {
  log "the helm just built does not report $HELM_VERSION"
  exit 1
}
rm -rf "$(dirname "$DEST")"
mv "$tmp" "$(dirname "$DEST")"
trap - EXIT
ln -sfn "$DEST" "$BIN/helm"
log "built helm $HELM_VERSION in $((SECONDS - start))s"
echo "$DEST"
