#!/usr/bin/env bash
# The project's test command (README, .ci/run): venv, install, brokers, quality gates, pytest.
#   bash deploy/dev/test.sh [pytest args...]
# Fresh machine: creates .venv, installs natsbridge with its test and dev extras, starts
# every broker with deploy/dev/services.sh, then runs ruff, mypy --strict and the suite.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,dev]'

NATSBRIDGE_NATSCLI=${NATSBRIDGE_NATSCLI:-0} bash deploy/dev/services.sh up  # natscli: benchmarks only
eval "$(bash deploy/dev/services.sh env)"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict (bridge/, mappings/)"
.venv/bin/mypy
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
