"""Log lines: JSON with the route and event fields, text for terminals, secrets redacted."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from natsbridge.bridge import logs, secrets
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.test_rabbitmq_bridge import wait_for


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


def test_debug_logs_of_real_drivers_never_show_an_escaped_secret(
    amqp_url: str,
    stomp_rabbitmq_url: str,
    nats_url: str,
    kafka_scram: Any,
    unique_name: str,
    tmp_path: Path,
) -> None:
    """pika, the STOMP client and kafka-python log at debug while each is refused this password."""
    amqp = urlsplit(amqp_url)
    wrong_amqp = amqp._replace(netloc=f"guest:{quote(SECRET, safe='')}@{amqp.hostname}:{amqp.port}")
    nats = {"connection": "nats", "subject": f"{unique_name}.x"}
    config = {
        "version": 1,
        "bridge": {"id": "secret-test"},
        "connections": {
            "rabbit": {"kind": "amqp", "url": "${env:WRONG_AMQP_URL}"},
            "stomp": {
                "kind": "stomp",
                "url": stomp_rabbitmq_url,
                "dialect": "rabbitmq",
                "login": "guest",
                "passcode": "${env:PW}",
            },
            "kafka": {
                "kind": "kafka",
                "bootstrap_servers": [kafka_scram.bootstrap],
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": kafka_scram.username,
                "sasl_password": "${env:PW}",
            },
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": "from-amqp",
                "from": {"connection": "rabbit", "queue": unique_name},
                "to": nats,
            },
            {
                "name": "from-stomp",
                "from": {"connection": "stomp", "destination": f"/queue/{unique_name}"},
                "to": nats,
            },
            {
                "name": "from-kafka",
                "from": {"connection": "kafka", "topics": [unique_name]},
                "to": nats,
            },
        ],
    }
    env = {"PW": SECRET, "WRONG_AMQP_URL": urlunsplit(wrong_amqp)}
    path = write_config(tmp_path / "bridge.yaml", config)
    bridge = BridgeProcess(path, tmp_path / "data", env, ("--log-level", "debug"))
    bridge.start(wait_ready=False)
    try:
        wait_for(
            lambda: (
                bridge.get("/api/routes")[0] == 200
                and all(route["last_error"] for route in bridge.routes().values())
            ),
            what="every route refused",
        )
        routes = json.dumps(bridge.routes())
    finally:
        bridge.terminate()
    log = bridge.log.read_text(errors="replace")
    assert '"logger": "pika' in log  # the drivers spoke, librdkafka through the connector:
    assert '"logger": "natsbridge.kafka.librdkafka' in log
    for text in (log, routes):
        assert "Zq" not in text and "Xw" not in text
