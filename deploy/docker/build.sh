#!/usr/bin/env bash
# Builds the natsbridge appliance image offline: wheelhouse, base image, image, SBOM.
#
#   bash deploy/docker/build.sh          wheelhouse + base image if needed + image + SBOM
#   bash deploy/docker/build.sh lock     regenerate deploy/docker/requirements.lock (needs PyPI)
#
# 1. Wheelhouse (deploy/docker/dist/wheelhouse): natsbridge's own wheel (`pip wheel .`) and the
#    wheels pinned with their sha256 in requirements.lock (natsbridge[all]) for the image's
#    CPython ($IMAGE_PYTHON, 3.11) on this machine's architecture (manylinux), fetched once
#    into $CACHE/image/wheels and checked against the lock.
#    dist/wheelhouse/requirements.txt is the lock plus natsbridge's wheel and its hash.
# 2. Base image: $PYTHON_IMAGE if set; else python:3.11-slim-bookworm if present or pullable;
#    else localhost/pybase:bookworm, imported from a debootstrap minbase rootfs (cached as
#    $CACHE/image/pybase-bookworm.tar; set DEBIAN_MIRROR for another mirror).
# 3. The image, with no network: `podman build --network none --format docker` (podman, with
#    $NATSBRIDGE_PODMAN_FLAGS, default `--runtime runc --cgroup-manager cgroupfs`) or
#    `docker build --network none`; the Dockerfile installs with --no-index --require-hashes.
#    Tag: $NATSBRIDGE_IMAGE (localhost/natsbridge:latest).
# 4. SBOM: dist/sbom.cdx.json, CycloneDX JSON of the lock, by cyclonedx-py.
# Engine: $NATSBRIDGE_ENGINE, else podman, else docker.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
CACHE="${NATSBRIDGE_CACHE_DIR:-$HOME/.cache/natsbridge}/image"
PY="${PYTHON:-python3}"
LOCK="$HERE/requirements.lock"
DIST="$HERE/dist"
IMAGE="${NATSBRIDGE_IMAGE:-localhost/natsbridge:latest}"
LOCAL_BASE=localhost/pybase:bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
IMAGE_PYTHON="${IMAGE_PYTHON:-3.11}" # the base image's Python: bookworm's and python:3.11-slim's

log() { printf '[build] %s\n' "$*" >&2; }

engine() {
  if [ -n "${NATSBRIDGE_ENGINE:-}" ]; then echo "$NATSBRIDGE_ENGINE"
  elif command -v podman >/dev/null; then echo podman
  elif command -v docker >/dev/null; then echo docker
  else log "neither podman nor docker found"; exit 1
  fi
}

# pip-compile and cyclonedx-py live in a tool venv of their own, not in the project's.
tools() {
  local venv="$CACHE/tools"
  if [ ! -x "$venv/bin/pip-compile" ] || [ ! -x "$venv/bin/cyclonedx-py" ]; then
    "$PY" -m venv "$venv"
    "$venv/bin/pip" install -q 'pip-tools>=7.4,<8' 'cyclonedx-bom>=4,<8'
  fi
  echo "$venv/bin"
}

lock() {
  local bin
  bin="$(tools)"
  (cd "$ROOT" && "$bin/pip-compile" -q --extra all --generate-hashes --strip-extras \
    --allow-unsafe --no-emit-index-url --no-emit-find-links \
    --output-file deploy/docker/requirements.lock pyproject.toml)
  # `all` names natsbridge's own extras (natsbridge[amqp,…]): pip-compile then lists
  # natsbridge itself as a file:// URL. Its wheel is pinned separately (wheelhouse), so
  # drop that entry with its warning and "via" lines.
  python3 - "$LOCK" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
text = re.sub(r"# WARNING: pip install will require.*?\n(?=[a-z])", "", text, flags=re.S)
text = re.sub(r"natsbridge @ file://\S+\n(    #.*\n)*", "", text)
open(path, "w").write(text)
PY
}

wheelhouse() {
  local wheels="$CACHE/wheels" arch cp
  arch="$(uname -m)"
  cp="cp${IMAGE_PYTHON/./}"
  # The image's interpreter and platform, whatever Python runs this script.
  local get=(download -q --no-deps --only-binary=:all: --require-hashes
    --python-version "$IMAGE_PYTHON" --implementation cp --abi "$cp" --abi abi3 --abi none
    --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch"
    --platform "manylinux2014_$arch" --platform "manylinux1_$arch" --platform any)
  mkdir -p "$wheels"
  rm -rf "$DIST/wheelhouse"
  mkdir -p "$DIST/wheelhouse"
  # Offline first (the cache), the package index only for what the cache lacks.
  "$PY" -m pip "${get[@]}" --no-index --find-links "$wheels" -r "$LOCK" -d "$wheels" 2>/dev/null \
    || "$PY" -m pip "${get[@]}" -r "$LOCK" -d "$wheels"
  # Exactly the locked files: the cache may hold other versions.
  "$PY" - "$LOCK" "$wheels" "$DIST/wheelhouse" <<'EOF'
import hashlib, re, shutil, sys
from pathlib import Path
lock, cache, out = Path(sys.argv[1]).read_text(), Path(sys.argv[2]), Path(sys.argv[3])
hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", lock))
for wheel in cache.glob("*.whl"):
    if hashlib.sha256(wheel.read_bytes()).hexdigest() in hashes:
        shutil.copy2(wheel, out / wheel.name)
EOF
  # A fixed timestamp makes the wheel, hence the image layer, the same for the same sources.
  (cd "$ROOT" && SOURCE_DATE_EPOCH=315532800 \
    "$PY" -m pip wheel -q --no-deps --wheel-dir "$DIST/wheelhouse" .)
  local own
  own="$(ls "$DIST"/wheelhouse/natsbridge-*.whl)"
  {
    cat "$LOCK"
    printf 'natsbridge[all]==%s \\\n    --hash=sha256:%s\n' \
      "$(basename "$own" | cut -d- -f2)" "$(sha256sum "$own" | cut -d' ' -f1)"
  } >"$DIST/wheelhouse/requirements.txt"
  log "wheelhouse: $(ls "$DIST/wheelhouse" | grep -c '\.whl$') wheels"
}

base_image() {
  local eng="$1" tar="$CACHE/pybase-bookworm.tar" rootfs
  if [ -n "${PYTHON_IMAGE:-}" ]; then echo "$PYTHON_IMAGE"; return; fi
  if "$eng" image inspect python:3.11-slim-bookworm >/dev/null 2>&1 \
    || "$eng" pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
    echo python:3.11-slim-bookworm
    return
  fi
  if ! "$eng" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    if [ ! -s "$tar" ]; then
      log "no python image can be pulled: debootstrap bookworm minbase + python3 (about 1 min)"
      rootfs="$(mktemp -d)"
      debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >&2
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -cf "$tar.tmp" .
      rm -rf "$rootfs"
      mv "$tar.tmp" "$tar"
    fi
    "$eng" import "$tar" "$LOCAL_BASE" >/dev/null
  fi
  echo "$LOCAL_BASE"
}

image() {
  local eng base
  eng="$(engine)"
  base="$(base_image "$eng")"
  local digest
  digest="$(sha256sum "$DIST/wheelhouse/requirements.txt" | cut -d' ' -f1)"
  local args=(build --network none --build-arg "PYTHON_IMAGE=$base"
    --build-arg "WHEELHOUSE_SHA256=$digest"
    -f deploy/docker/Dockerfile -t "$IMAGE")
  local flags=()
  if [ "$eng" = podman ]; then
    # docker format keeps the HEALTHCHECK (OCI has none); runc and cgroupfs: see the README.
    args+=(--format docker)
    read -r -a flags <<<"${NATSBRIDGE_PODMAN_FLAGS---runtime runc --cgroup-manager cgroupfs}"
  fi
  log "$eng ${flags[*]} ${args[*]} ."
  (cd "$ROOT" && "$eng" "${flags[@]}" "${args[@]}" .)
  # The images this replaced (untagged now): each holds a venv, and CI builds every run.
  "$eng" image prune -f --filter label=org.opencontainers.image.title=natsbridge >/dev/null
}

sbom() {
  local bin
  bin="$(tools)"
  "$bin/cyclonedx-py" requirements --of JSON -o "$DIST/sbom.cdx.json" "$LOCK" >/dev/null
  log "SBOM: $DIST/sbom.cdx.json"
}

case "${1:-all}" in
  lock) lock ;;
  all)
    wheelhouse
    image
    sbom
    ;;
  *)
    echo "usage: $0 [all|lock]" >&2
    exit 2
    ;;
esac
