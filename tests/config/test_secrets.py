"""Secrets never appear in any output: errors, validate's summary, redacted URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from natsbridge.bridge import secrets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "pw-Xq9-never-print-me"


def natsbridge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natsbridge", *args],
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


STOMP = (EXAMPLES / "stomp-nats.yaml").read_text()


def stomp_config(tmp_path: Path, old: str = "", new: str = "") -> str:
    config = tmp_path / "stomp.yaml"
    config.write_text(STOMP.replace(old, new, 1) if old else STOMP)
    return str(config)


def test_validate_prints_names_that_contain_a_secret_unchanged(tmp_path: Path) -> None:
    config = stomp_config(tmp_path, "/topic/quotes.>", "/topic/eco-admin-orders.>")
    result = natsbridge("validate", "-c", config, env={"ACTIVEMQ_PASSWORD": "admin"})
    assert result.returncode == 0, result.stderr
    assert "activemq:/topic/eco-admin-orders.>" in result.stdout
    assert "***" not in result.stdout


@pytest.mark.parametrize("password", ["admin", "o", "."])
def test_map_returns_the_subject_whatever_the_password(password: str) -> None:
    env = {"ACTIVEMQ_PASSWORD": password}
    example = str(EXAMPLES / "stomp-nats.yaml")
    args = ("map", "-c", example, "--route", "quotes-to-nats", "/topic/quotes.eco.admin.orders")
    result = natsbridge(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["address"] == "quotes.eco.admin.orders"
    assert "***" not in result.stdout


def test_a_one_character_secret_does_not_shred_validate(tmp_path: Path) -> None:
    result = natsbridge("validate", "-c", stomp_config(tmp_path), env={"ACTIVEMQ_PASSWORD": "o"})
    assert result.returncode == 0, result.stderr
    assert "quotes-to-nats: activemq:/topic/quotes.>" in result.stdout
    assert "***" not in result.stdout + result.stderr


ESCAPED_SECRET = "Zq\\9\"Xw'7:kP"  # a backslash and both quotes, as repr/JSON/STOMP escape them


def test_found_value_of_a_secret_is_masked_in_any_form(tmp_path: Path) -> None:
    text = STOMP.replace("dialect: activemq", "dialect: activemq\n    heartbeat: ${env:PW}", 1)
    text = text.replace("dialect: rabbitmq", "dialect: ${env:PW}", 1)
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = natsbridge("validate", "-c", str(config), env={"PW": ESCAPED_SECRET})
    assert result.returncode == 1
    assert "connections.activemq.heartbeat" in result.stderr
    assert "connections.rabbit-stomp.dialect" in result.stderr
    assert "Zq" not in result.stderr and "Xw" not in result.stderr
    assert result.stderr.count("found ***") == 2


def test_escaped_forms_are_secret_too() -> None:
    secrets.register(ESCAPED_SECRET)
    for form in (
        repr(ESCAPED_SECRET),
        repr(ESCAPED_SECRET.encode()),
        json.dumps(ESCAPED_SECRET),
        json.dumps(repr(ESCAPED_SECRET)),
        quote(ESCAPED_SECRET, safe=""),
        ESCAPED_SECRET.replace("\\", "\\\\").replace(":", "\\c"),  # STOMP header escaping
    ):
        redacted = secrets.redact(f"frame {form} end")
        assert "Zq" not in redacted and "Xw" not in redacted, (form, redacted)
        assert redacted.startswith("frame ") and redacted.endswith(" end")


def test_short_secrets_are_not_searched_for_in_text() -> None:
    secrets.register("o")
    secrets.register("ab")
    assert secrets.redact("hello world, abc") == "hello world, abc"
    assert secrets.redact_url("amqp://u:o@host/") == "amqp://u:***@host/"


def test_redact_url_masks_the_password_of_urls_urllib_refuses() -> None:
    assert secrets.redact_url("amqp://u:pw-123456@[::1/") == "amqp://***@[::1/"
