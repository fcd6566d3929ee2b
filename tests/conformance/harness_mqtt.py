"""The `mqtt` connector on Mosquitto: MQTT 5, QoS 1, a persistent source session per test."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from paho.mqtt.client import MQTTMessage

from natsbridge.bridge.envelope import Envelope
from tests.conformance.harness import Harness, Native, Reader
from tests.connectors.mqtt_helpers import host_port, raw_client
from tests.e2e.hostile import HID_HEADER, Case, Message, common_cases


def _unsendable(case: Case) -> str | None:
    """Why an MQTT 5 user property cannot carry `case`, or None."""
    for name, value in case.headers:
        if not isinstance(name, str) or not isinstance(value, str):
            return "a user property is a pair of UTF-8 strings (paho takes str only)"
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name + value):
            return "Mosquitto drops the connection over control characters in a user property"
    return None


def _properties(pairs: Sequence[tuple[str, str]]) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    if not pairs:
        return None
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = list(pairs)
    return properties


def _native(message: MQTTMessage) -> Native:
    properties = getattr(message, "properties", None)
    users = getattr(properties, "UserProperty", ())
    return Native(bytes(message.payload), tuple((name, value) for name, value in users))


class _SubscriptionReader(Reader):
    """A clean-session subscriber at QoS 1 on the sink's topic, started before the sink."""

    def __init__(self, url: str, topic: str, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[Native] = asyncio.Queue()
        self.loop = loop
        self._client = raw_client(url)
        client: Any = self._client.__enter__()
        subscribed = threading.Event()
        client.on_message = lambda _c, _u, m: self.loop.call_soon_threadsafe(
            self.queue.put_nowait, _native(m)
        )
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe(topic, qos=1)
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        out: list[Native] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(out) < count:
                    out.append(await self.queue.get())
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self._client.__exit__, None, None, None)


class MqttHarness(Harness):
    """Topics `<address>/#` (source) and `<address>/ok` (sink); the client ids carry the test."""

    id = "mqtt"
    kind = "mqtt"
    fixture = "mqtt_url"
    mark = "mqtt"
    acks_each = False
    """PUBACKs go out in arrival order (MQTT 4.6): an acked message after the first unsettled
    one is not yet PUBACKed, and the broker sends it again after a reopen."""
    control_values = (
        "MQTT strings cannot carry control characters (Mosquitto drops the connection): "
        "the sink dead-letters such a header"
    )

    def connection(self) -> dict[str, Any]:
        # The source's client id is `<client_id>:<route>:in`: unique per test and address,
        # the same on a reopen (the persistent session resumes).
        return {
            "kind": "mqtt",
            "url": self.endpoint,
            "protocol": 5,
            "client_id": f"conf-{self.name}",
            "session_expiry": "300s",
        }

    async def new_address(self) -> str:
        return f"conf/{self.name}/{len(self.cleanups)}"

    def source(self, address: str) -> dict[str, Any]:
        self.cleanups.append(f"conf-{self.name}:{self.route_name(address)}:in")
        return {"topics": [f"{address}/#"], "qos": 1}

    def sink(self, address: str) -> dict[str, Any]:
        return {"topic": f"{address}/ok", "qos": 1}

    def target(self, address: str) -> str:
        return f"{address}/ok"

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        def publish() -> None:
            with raw_client(self.endpoint) as client:
                infos = [
                    client.publish(  # type: ignore[attr-defined]
                        f"{address}/ok", m.payload, qos=1, properties=_properties(m.headers)
                    )
                    for m in messages
                ]
                for info in infos:
                    info.wait_for_publish(10)  # PUBACKed: the broker holds it
                    assert info.is_published(), f"no PUBACK for message {info.mid}"

        await asyncio.to_thread(publish)

    async def reader(self, address: str) -> Reader:
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(_SubscriptionReader, self.endpoint, f"{address}/ok", loop)

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(self.target(address), b"x", {"X-Nul": ["a\x00b"]})
        return envelope, "a header value with NUL, which an MQTT string cannot carry"

    def hostile_cases(self) -> list[Case]:
        return [case for case in common_cases(self.name) if _unsendable(case) is None]

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        def publish() -> dict[str, str]:
            refused: dict[str, str] = {}
            for message in batch:  # a connection each: a refusal cannot take the rest along
                pairs = [(HID_HEADER, message.hid), *message.case.headers]
                with raw_client(self.endpoint) as client:
                    info = client.publish(  # type: ignore[attr-defined]
                        f"{address}/ok", message.payload(), qos=1, properties=_properties(pairs)
                    )
                    info.wait_for_publish(10)
                    if not info.is_published():
                        refused[message.hid] = f"no PUBACK (rc {info.rc})"
            return refused

        return await asyncio.to_thread(publish)

    def ports(self) -> set[int]:
        return {host_port(self.endpoint)[1]}

    async def cleanup(self) -> None:
        """End the source sessions: a clean start with session expiry 0 discards them."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        def end(client_id: str) -> None:
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
            )
            client.connect(*host_port(self.endpoint), clean_start=True)
            client.loop_start()
            client.disconnect()
            client.loop_stop()

        for client_id in self.cleanups:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(end, client_id)
