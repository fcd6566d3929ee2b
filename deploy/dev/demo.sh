#!/usr/bin/env bash
# README command 1: the bridge's main job on a fresh machine.
# Starts the local brokers, runs `natsbridge run` on examples/rabbitmq-nats.yaml, sends a
# few thousand messages each way plus requests, prints what arrived, then stops the bridge
# with SIGTERM (a graceful drain).      bash deploy/dev/demo.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x .venv/bin/natsbridge ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
fi
bash deploy/dev/services.sh up
eval "$(bash deploy/dev/services.sh env)"
export NATSBRIDGE_DATA_DIR="${NATSBRIDGE_DATA_DIR:-$(mktemp -d)/natsbridge-data}"
exec .venv/bin/python deploy/dev/demo.py examples/rabbitmq-nats.yaml "${1:-3000}"
