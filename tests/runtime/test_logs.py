"""Log lines: JSON with the route and event fields, text for terminals, secrets redacted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from natsbridge.bridge import logs, secrets
from natsbridge.bridge.threads import spawn
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


@pytest.mark.parametrize(
    "driver", ["pika", "pika.channel", "stomp.py", "natsbridge.kafka.librdkafka", "nats"]
)
def test_driver_debug_only_with_driver_logs(
    driver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-level debug alone once let pika print 290 lines in 5 idle seconds."""
    logs.configure("debug", json_lines=False)
    logging.getLogger(driver).debug("driver internals")
    logging.getLogger("natsbridge.amqp").debug("our own debug")
    err = capsys.readouterr().err
    assert "driver internals" not in err and "our own debug" in err
    logs.configure("debug", json_lines=False, driver_logs=True)
    logging.getLogger(driver).debug("driver internals")
    assert "driver internals" in capsys.readouterr().err
    logs.configure("info", json_lines=False, driver_logs=True)
    logging.getLogger(driver).debug("driver internals")
    assert "driver internals" not in capsys.readouterr().err


def test_a_kind_declares_its_driver_loggers() -> None:
    from natsbridge.bridge.registry import load_connector

    assert load_connector("stomp").driver_loggers() == {"stomp.py": logging.WARNING}
    assert load_connector("mqtt").driver_loggers() == {"paho": logging.WARNING}  # default
    assert load_connector("kafka").driver_loggers() == {
        "natsbridge.kafka.librdkafka": logging.WARNING
    }
    assert load_connector("amqp").driver_loggers()["pika.adapters"] == logging.CRITICAL


def test_lines_from_a_route_its_threads_and_their_callbacks_name_the_route(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", json_lines=True)
    connector = logging.getLogger("natsbridge.someconnector")

    async def route_task() -> None:
        logs.route_context("r9")
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_thread() -> None:
            connector.info("from the driver thread")
            loop.call_soon_threadsafe(lambda: (connector.info("posted"), done.set_result(None)))

        connector.info("on the loop")
        spawn(on_thread, "driver").join()
        await done

    asyncio.run(route_task())
    connector.info("outside any route")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["msg"], line.get("route")) for line in lines] == [
        ("on the loop", "r9"),
        ("from the driver thread", "r9"),
        ("posted", "r9"),
        ("outside any route", None),
    ]


def test_a_failed_connect_leaves_one_line_a_good_one_keeps_its_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each connect failure was logged by the driver, the connector and the route."""
    logs.configure("info", json_lines=True)
    driver = logging.getLogger("stomp.py")
    connector = logging.getLogger("natsbridge.someconnector")
    route = logging.getLogger(logs.ROUTE_LOGGER)

    def connect(fail: bool) -> threading.Thread:
        with contextlib.suppress(ConnectionError), logs.connect_attempt():
            driver.warning("could not connect to host")
            connector.info("connected" if not fail else "refused")
            late = spawn(time.sleep, "driver", 0.1)  # a thread that outlives the attempt
            if fail:
                raise ConnectionError("refused")
        return late

    late = connect(fail=True)
    spawn(lambda: connector.warning("connection ended"), "late").join()
    route.warning("cannot connect the source, retrying in 0.1s: refused")
    connector.error("an error always shows")
    late.join()
    connect(fail=False)
    lines = [json.loads(line)["msg"] for line in capsys.readouterr().err.splitlines()]
    assert lines == [
        "connection ended",  # not from the attempt's context: kept
        "cannot connect the source, retrying in 0.1s: refused",
        "an error always shows",
        "could not connect to host",
        "connected",
    ]


SECRET = "Zq\\9\"Xw'7:kP"  # a backslash, both quotes and a colon: every library escapes it


def test_driver_records_hide_a_secret_in_every_escaped_form(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets.register(SECRET)
    logs.configure("debug", json_lines=True, driver_logs=True)
    stomp_escaped = SECRET.replace("\\", "\\\\").replace(":", "\\c")
    logging.getLogger("pika.connection").debug("params %r", {"password": SECRET})
    logging.getLogger("natsbridge.kafka.librdkafka").debug("sasl %s", SECRET.encode())
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
    logs.configure("debug", json_lines=True, driver_logs=True)
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
    """pika, the STOMP client and librdkafka log at debug while each is refused this password."""
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
    bridge = BridgeProcess(path, tmp_path / "data", env, ("--log-level", "debug", "--driver-logs"))
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
    # Zq, then the backslash in any escaping (\\, %5C, none), then 9: random bytes a driver
    # logs (a SCRAM proof in base64) may hold "Zq" but not this.
    escaped = re.compile(r"Zq(?:[^A-Za-z0-9]|%5[Cc]){0,4}9|Xw(?:[^A-Za-z0-9]|%2[7Cc]){0,4}7")
    for text in (log, routes):
        assert not escaped.search(text), escaped.search(text)
