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


SECRET = "Zq\\9\"Xw'7:kP"  # a backslash, both quotes and a colon: every library escapes it


def test_driver_records_hide_a_secret_in_every_escaped_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets.register(SECRET)
    logs.configure("debug", json_lines=True)
    stomp_escaped = SECRET.replace("\\", "\\\\").replace(":", "\\c")
    logging.getLogger("pika.connection").debug("params %r", {"password": SECRET})
    logging.getLogger("kafka.conn").debug("sasl %s", SECRET.encode())
    logging.getLogger("stomp.py").debug("Sending frame: %s", [f"passcode:{stomp_escaped}".encode()])
    logging.getLogger("nats.aio.client").debug("connect %s", json.dumps({"pass": SECRET}))
    try:
        raise ValueError(repr(SECRET))
    except ValueError:
        logging.getLogger("pika.adapters.utils").exception("connect failed")
    err = capsys.readouterr().err
    events = [json.loads(line) for line in err.splitlines()]
    assert len(events) == 5
    assert "Zq" not in err and "Xw" not in err
    assert all("***" in event["msg"] + event.get("exc", "") for event in events)


def test_a_one_character_secret_leaves_log_lines_whole(capsys: pytest.CaptureFixture[str]) -> None:
    secrets.register("o")
    logs.configure("info", json_lines=False)
    logging.getLogger("natsbridge.route").warning("route orders-to-nats stopped")
    assert capsys.readouterr().err.rstrip().endswith("route orders-to-nats stopped")


def test_bad_format_arguments_of_a_library_cost_no_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("debug", json_lines=True)
    logging.getLogger("kafka.client").debug("two %s %s", "only-one")
    [line] = capsys.readouterr().err.splitlines()
    assert "two %s %s" in json.loads(line)["msg"]
