"""MQTT <-> NATS end to end through `natsbridge run`, over examples/mqtt-nats.yaml.

Topics, subjects, streams, route names and the client id are made unique to the test
(the MQTT session is named after the client id and outlives a run). Raw paho produces
into and reads from Mosquitto; nats-py does the NATS side.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from tests.connectors.mqtt_helpers import mqtt_url, raw_client
from tests.e2e.bridge_process import BridgeProcess, write_config

pytestmark = [pytest.mark.mqtt, pytest.mark.nats]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mqtt-nats.yaml"
WAIT_S = 120.0


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], BridgeProcess]]:
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any]) -> BridgeProcess:
        process = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


def unique_example(tag: str, url: str, nats_url: str) -> dict[str, Any]:
    """examples/mqtt-nats.yaml as written, with its names made unique to one test."""
    config = yaml.safe_load(EXAMPLE.read_text())
    config["bridge"]["id"] = f"e2e-{tag}"
    config["connections"]["mqtt"]["url"] = url
    config["connections"]["mqtt"]["client_id"] = f"natsbridge-e2e-{tag}"
    config["connections"]["nats"]["servers"] = [nats_url]
    sensors, setpoints = config["routes"]
    for route in config["routes"]:
        route["name"] = f"{route['name']}-{tag}"
    assert sensors["from"]["topics"] == ["sensors/+/temp"]
    sensors["from"]["topics"] = [f"sensors-{tag}/+/temp"]
    assert sensors["to"]["subject"] == "plant.{{wildcard(1)}}.temp"
    sensors["to"]["subject"] = f"plant-{tag}.{{{{wildcard(1)}}}}.temp"
    sensors["to"]["jetstream"]["stream"] = f"PLANT_{tag}"
    assert setpoints["from"]["subject"] == "setpoints.*"
    setpoints["from"]["subject"] = f"setpoints-{tag}.*"
    setpoints["from"]["jetstream"]["stream"] = f"SETPOINTS_{tag}"
    assert setpoints["to"]["topic"] == "setpoints/{{wildcard(1)}}"
    setpoints["to"]["topic"] = f"setpoints-{tag}/{{{{wildcard(1)}}}}"
    return config


def wait_for(check: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def delivered(bridge: BridgeProcess) -> int:
    status, body = bridge.get("/api/routes")
    return sum(r["counters"]["delivered"] for r in body["routes"]) if status == 200 else 0


async def read_stream(nats_url: str, stream: str, subject: str, want: int) -> dict[bytes, int]:
    """Every payload in `stream` (with how often it is there), until `want` distinct ones."""
    nc = await nats.connect(nats_url)
    seen: dict[bytes, int] = {}
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream=stream)
        deadline = time.monotonic() + WAIT_S
        while len(seen) < want and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(1000, timeout=2)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                seen[msg.data] = seen.get(msg.data, 0) + 1
                await msg.ack()
        return seen
    finally:
        await nc.close()


def test_both_routes_of_the_example_work(
    nats_url: str, tag: str, bridge_factory: Callable[[dict[str, Any]], BridgeProcess]
) -> None:
    url = mqtt_url()
    bridge = bridge_factory(unique_example(tag, url, nats_url))
    bridge.start()  # ready: subscribed to the MQTT filter and consuming the NATS stream
    got: list[Any] = []
    arrived = threading.Event()
    with raw_client(url) as mqtt:
        # MQTT -> JetStream: "sensors-<tag>/press-7/temp" -> "plant-<tag>.press-7.temp".
        info = mqtt.publish(f"sensors-{tag}/press.7/temp", b"21.5", qos=1)  # type: ignore[attr-defined]
        info.wait_for_publish(10)

        # NATS -> MQTT: "setpoints-<tag>.press-7" -> topic "setpoints-<tag>/press-7".
        def on_message(client: Any, userdata: Any, message: Any) -> None:
            got.append(message)
            arrived.set()

        mqtt.on_message = on_message  # type: ignore[attr-defined]
        mqtt.subscribe(f"setpoints-{tag}/+", qos=1)  # type: ignore[attr-defined]

        async def nats_side() -> Any:
            nc = await nats.connect(nats_url)
            try:
                js = nc.jetstream()
                sub = await js.pull_subscribe(f"plant-{tag}.>", stream=f"PLANT_{tag}")
                deadline = time.monotonic() + WAIT_S
                while True:
                    try:
                        [msg] = await sub.fetch(1, timeout=2)
                        break
                    except nats.errors.TimeoutError:
                        assert time.monotonic() < deadline, "nothing reached JetStream"
                await js.publish(f"setpoints-{tag}.press-7", b"80", headers={"X-Unit": "C"})
                return msg
            finally:
                await nc.close()

        sensor = asyncio.run(nats_side())
        assert arrived.wait(WAIT_S), "the setpoint never reached MQTT"
    # a level holding '.' is one escaped token: the subject keeps one token per level
    assert (sensor.subject, sensor.data) == (f"plant-{tag}.press%2E7.temp", b"21.5")
    assert sensor.headers["Mqtt-Topic"] == f"sensors-{tag}/press.7/temp"
    [setpoint] = got
    assert (setpoint.topic, setpoint.payload) == (f"setpoints-{tag}/press-7", b"80")
    assert ("X-Unit", "C") in setpoint.properties.UserProperty
    assert bridge.terminate() == 0


@pytest.mark.slow
def test_no_loss_mqtt_to_jetstream_through_kill_9(
    nats_url: str, tag: str, bridge_factory: Callable[[dict[str, Any]], BridgeProcess]
) -> None:
    """10,000 QoS 1 messages published while the bridge runs; it is kill -9'ed twice
    mid-stream: every message reaches JetStream (duplicates allowed, losses not)."""
    count = 10_000
    url = mqtt_url()
    config = unique_example(tag, url, nats_url)
    config["routes"] = config["routes"][:1]
    bridge = bridge_factory(config)
    bridge.start()  # the session and its subscription exist from here on
    sent = [f"{tag}-{i}".encode() for i in range(count)]
    with raw_client(url) as mqtt:

        def publish() -> None:
            for i, payload in enumerate(sent):
                info = mqtt.publish(f"sensors-{tag}/s{i % 7}/temp", payload, qos=1)  # type: ignore[attr-defined]
            info.wait_for_publish(WAIT_S)

        publishing = threading.Thread(target=publish)
        publishing.start()
        for progress in (1_000, 4_000):
            wait_for(lambda p=progress: delivered(bridge) >= p, what=f"{progress} delivered")
            bridge.kill()
            bridge.start()
        publishing.join()
    seen = asyncio.run(read_stream(nats_url, f"PLANT_{tag}", f"plant-{tag}.>", count))
    missing = set(sent) - set(seen)
    assert not missing, f"{len(missing)} of {count} messages lost, e.g. {sorted(missing)[:5]}"
    print(f"MQTT -> JetStream: {count} sent, none lost, {sum(seen.values()) - count} duplicates")
    assert bridge.terminate() == 0
