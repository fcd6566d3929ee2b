"""Secrets never appear in any output: errors, validate's summary, redacted URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge import secrets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "pw-Xq9-never-print-me"


def natsbridge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_password_from_env_never_printed(tmp_path: Path) -> None:
    env = {"NATSBRIDGE_AMQP_URL": f"amqp://app:{PASSWORD}@127.0.0.1:5672/%2F"}
    ok = natsbridge("validate", "-c", str(EXAMPLES / "rabbitmq-nats.yaml"), env=env)
    assert ok.returncode == 0, ok.stderr
    assert PASSWORD not in ok.stdout + ok.stderr

    broken = (EXAMPLES / "rabbitmq-nats.yaml").read_text()
    broken = broken.replace("kind: amqp", "kind: amqp\n    heartbeat: ${env:NATSBRIDGE_AMQP_URL}")
    broken = broken.replace(
        "connection: rabbit\n      exchange: orders",
        "connection: rabbit\n      exchange: orders\n      prefetch: ${env:NATSBRIDGE_AMQP_URL}",
    )
    config = tmp_path / "bad.yaml"
    config.write_text(broken)
    failed = natsbridge("validate", "-c", str(config), env=env)
    assert failed.returncode == 1
    assert "connections.rabbit.heartbeat" in failed.stderr
    assert "routes[0].from.prefetch" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr
    assert "***" in failed.stderr


def test_password_written_in_a_secret_field_is_masked(tmp_path: Path) -> None:
    text = (EXAMPLES / "stomp-nats.yaml").read_text()
    text = text.replace("passcode: ${env:RABBITMQ_STOMP_PASSWORD:-guest}", f"passcode: {PASSWORD}")
    text = text.replace("dialect: rabbitmq", "dialect: rabbitmqq")
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    failed = natsbridge("validate", "-c", str(config), env={})
    assert failed.returncode == 1 and "dialect" in failed.stderr
    assert PASSWORD not in failed.stdout + failed.stderr


def test_redact_url_keeps_the_host() -> None:
    secrets.register("hunter2-zz")
    assert (
        secrets.redact_url("amqp://bob:hunter2-zz@host:5672/%2F") == "amqp://bob:***@host:5672/%2F"
    )
    assert secrets.redact_url("nats://host:4222") == "nats://host:4222"
    assert secrets.redact("a hunter2-zz b") == "a *** b"
