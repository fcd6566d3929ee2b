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
.venv/bin/python -m pip install --quiet -e '.[all,test,dev]'
# The example connector, installed as a user installs one: not editable (tests/plugin).
.venv/bin/python -m pip install --quiet ./examples/plugin

# helm and docker compose render the appliance's manifests in tests/deploy; they build from
# their Go modules (minutes the first time, cached after), beside the brokers' start-up.
# promtool (Debian's prometheus package, extracted) evaluates the chart's alerts.
tools_log=$(mktemp)
( bash deploy/helm/install-helm.sh && bash deploy/helm/install-promtool.sh &&
  bash deploy/docker/install-compose.sh ) >"$tools_log" 2>&1 &
tools=$!
NATSBRIDGE_NATSCLI=${NATSBRIDGE_NATSCLI:-0} bash deploy/dev/services.sh up  # natscli: benchmarks only
eval "$(bash deploy/dev/services.sh env)"
if ! wait "$tools"; then
  cat "$tools_log" >&2
  echo "installing helm / promtool / docker compose failed" >&2
  exit 1
fi

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
