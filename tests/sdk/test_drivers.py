"""Broker clients are optional: validating needs none, running a route needs its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
DRIVERS = ("pika", "kafka", "stomp", "nats")  # nats-py too: validating never connects


def python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NATSBRIDGE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_validate_imports_no_broker_client(example: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from natsbridge.bridge.cli import main\n"
        f"code = main(['validate', '-c', {str(example)!r}])\n"
        f"loaded = sorted(set({DRIVERS!r}) & set(sys.modules))\n"
        "print('loaded:', loaded)\n"
        "sys.exit(code or bool(loaded))\n"
    )
    result = python(code, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout


def test_a_route_whose_driver_is_missing_fails_naming_the_extra(tmp_path: Path) -> None:
    rabbit = next(p for p in EXAMPLES if p.stem == "rabbitmq-nats")
    code = (
        "import sys\n"
        "sys.modules['pika'] = None  # as if natsbridge[amqp] were not installed\n"
        "from natsbridge.bridge.cli import main\n"
        f"sys.exit(main(['run', '-c', {str(rabbit)!r}, '--once']))\n"
    )
    result = python(code, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kind amqp needs the amqp driver (pika): pip install 'natsbridge[amqp]'" in (
        result.stderr
    )
