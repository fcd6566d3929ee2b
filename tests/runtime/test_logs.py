"""Log lines: JSON with the route and event fields, text for terminals, secrets redacted."""

from __future__ import annotations

import json
import logging

import pytest

from bridge import logs, secrets


def test_json_lines_carry_route_event_and_hide_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    secrets.register("pw-in-a-log-line")
    logs.configure("info", json_lines=True)
    logger = logging.getLogger("natsbridge.route")
    logger.warning(
        "cannot connect to amqp://u:%s@h/",
        "pw-in-a-log-line",
        extra={"route": "r1", "connection": "rabbit", "event": "connect_failed"},
    )
    logging.getLogger("pika").info("library chatter is quiet at info")
    logging.getLogger("pika.channel").warning("Received remote Channel.Close (404)")
    logging.getLogger("pika.adapters.base_connection").error("Full-stack connection failed")
    [line] = capsys.readouterr().err.strip().splitlines()
    event = json.loads(line)
    assert event["msg"] == "cannot connect to amqp://u:***@h/"
    assert (event["route"], event["connection"], event["event"]) == (
        "r1",
        "rabbit",
        "connect_failed",
    )
    assert event["level"] == "warning" and event["ts"].endswith("Z")


def test_text_lines_for_terminals(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", json_lines=False)
    logging.getLogger("natsbridge").debug("hello", extra={"route": "r2", "event": "started"})
    line = capsys.readouterr().err.strip()
    assert line.endswith("natsbridge [r2 started] hello")
    logging.getLogger("pika.channel").debug("everything shows at debug")
    assert "everything shows at debug" in capsys.readouterr().err
