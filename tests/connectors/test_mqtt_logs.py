"""Lines logged on paho's own network thread name the route, like every connector line."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from natsbridge.bridge import logs
from natsbridge.bridge.registry import all_kinds
from natsbridge.connectors.mqtt.client import MqttClient
from natsbridge.connectors.mqtt.config import MqttConnection
from tests.connectors.mqtt_helpers import mqtt_url

pytestmark = [pytest.mark.mqtt]


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Logging as it was: later tests' driver threads must not write to this test's stderr."""
    monkeypatch.setattr(logs, "_everything", logs._everything)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = [name for kind in all_kinds().values() for name in kind.driver_loggers()]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.mark.usefixtures("restored_logging")
def test_paho_network_thread_lines_carry_the_route(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("debug", json_lines=True, driver_logs=True)
    config = MqttConnection(kind="mqtt", url=mqtt_url())

    async def route_task() -> None:
        logs.route_context("r-mqtt")
        client = MqttClient(config, f"logs-{uuid.uuid4().hex[:8]}", False, 10, "r-mqtt source")
        await client.open()  # the CONNACK is read on paho's thread
        await client.subscribe([f"logs/{uuid.uuid4().hex[:8]}"], 1)
        await client.close()

    asyncio.run(route_task())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    paho = [line for line in lines if line["logger"] == "paho.mqtt.client"]
    received = [line for line in paho if line["msg"].startswith("Received")]
    assert received, f"no line from paho's network thread: {paho}"
    assert all(line.get("route") == "r-mqtt" for line in paho), "\n".join(map(str, paho))
