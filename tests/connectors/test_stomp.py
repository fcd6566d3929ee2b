"""The STOMP connector against both real brokers: ActiveMQ Classic and RabbitMQ's STOMP plugin.

The conformance suites run per dialect, on queues and on durable wildcard topic
subscriptions. The raw side of each test (producing into the source, reading what the sink
wrote) is plain stomp.py. Fault tests pause (SIGSTOP) or restart the shared brokers of
deploy/dev/services.sh through the `services` fixture, which brings them back afterwards.
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stomp  # type: ignore[import-untyped]

from bridge.config import load_config
from bridge.config.loader import Route
from bridge.config.model import BridgeSettings, StompConnection
from bridge.connector import Sink, Source
from bridge.envelope import Envelope
from connectors.stomp import StompDestinationSink, StompDestinationSource, connector
from tests.connectors.conformance import (
    SinkConformance,
    SourceConformance,
    unique,
)

pytestmark = pytest.mark.stomp

NASTY_HEADERS = {"X-Colon": "a:b:c", "X-Lines": "one\ntwo\r\nthree", "X-Back": "c:\\temp\\n"}
NASTY_PAYLOAD = b"\x00head\x00\xff\xfe binary \x00\n\r\x00tail\x00"


# ---------------------------------------------------------------- brokers and config


@dataclass(frozen=True)
class Broker:
    """One STOMP broker of the harness."""

    dialect: str
    url: str
    login: str
    passcode: str
    service: str  # name in services.sh

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname and parts.port
        return parts.hostname, parts.port

    def connection(self, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "stomp",
            "url": self.url,
            "dialect": self.dialect,
            "login": self.login,
            "passcode": self.passcode,
            **extra,
        }

    def topic(self, name: str) -> str:
        """A wildcard destination for every topic under `name`, in this dialect."""
        return f"/topic/{name}.>" if self.dialect == "activemq" else f"/topic/{name}.#"


@pytest.fixture(scope="session")
def activemq(stomp_activemq_url: str, activemq_credentials: tuple[str, str]) -> Broker:
    login, passcode = activemq_credentials
    return Broker("activemq", stomp_activemq_url, login, passcode, "activemq")


@pytest.fixture(scope="session")
def rabbitmq(stomp_rabbitmq_url: str) -> Broker:
    return Broker("rabbitmq", stomp_rabbitmq_url, "guest", "guest", "rabbitmq")


@pytest.fixture(params=["activemq", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """Each test using it runs once per broker."""
    return request.getfixturevalue(str(request.param))  # type: ignore[no-any-return]


def load_route(
    directory: Path,
    broker: Broker,
    *,
    source: dict[str, Any] | None = None,
    sink: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
    **route: Any,
) -> tuple[Route, StompConnection, BridgeSettings]:
    """A one-route config (STOMP → NATS or NATS → STOMP) loaded the way the bridge does."""
    name = route.pop("name", unique("r"))
    nats = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}
    body: dict[str, Any] = {"name": name}
    if source is not None:
        body["from"] = {"connection": "broker", **source}
        body["to"] = {"connection": "nats", "subject": "out.{{destination}}"}
    else:
        body["from"] = {"connection": "nats", "subject": "in.>"}
        body["to"] = {"connection": "broker", **(sink or {})}
    body.update(route)
    path = directory / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: test-bridge}\n"
        f"connections:\n  broker: {json.dumps(broker.connection(**(connection or {})))}\n"
        f"  nats: {json.dumps(nats)}\n"
        f"routes:\n  - {json.dumps(body)}\n"
    )
    config = load_config(path)
    [loaded] = config.routes
    conn = config.connections["broker"]
    assert isinstance(conn, StompConnection)
    return loaded, conn, config.bridge


def make_source(
    tmp: Path, broker: Broker, destination: str, name: str | None = None, **options: Any
) -> StompDestinationSource:
    connection = options.pop("connection", None)
    route_opts = {k: options.pop(k) for k in list(options) if k in ("max_in_flight",)}
    route, conn, bridge = load_route(
        tmp,
        broker,
        source={"destination": destination, **options},
        connection=connection,
        name=name or unique("r"),
        **route_opts,
    )
    source = connector.source(route, conn, bridge)
    assert isinstance(source, StompDestinationSource)
    return source


def make_sink(
    tmp: Path, broker: Broker, destination: str = "/queue/unused", **options: Any
) -> StompDestinationSink:
    connection = options.pop("connection", None)
    route, conn, bridge = load_route(
        tmp, broker, sink={"destination": destination, **options}, connection=connection
    )
    sink = connector.sink(route, conn, bridge)
    assert isinstance(sink, StompDestinationSink)
    return sink


# ---------------------------------------------------------------- the raw client


def raw_connection(broker: Broker, listener: Any = None) -> Any:
    conn = stomp.Connection12([broker.host_port], vhost="/", auto_decode=False, heartbeats=(0, 0))
    if listener is not None:
        conn.set_listener("test", listener)
    conn.connect(broker.login, broker.passcode, wait=True)
    return conn


def raw_send(
    broker: Broker,
    destination: str,
    payloads: Sequence[bytes],
    headers: dict[str, str] | None = None,
) -> None:
    """Send durably, in order; returns once the broker has processed every SEND."""
    conn = raw_connection(broker)
    try:
        for payload in payloads:
            conn.send(destination, payload, headers={"persistent": "true", **(headers or {})})
    finally:
        conn.disconnect(receipt=unique("bye"))  # waits: every earlier frame was processed


class Collector(stomp.ConnectionListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.frames: queue.Queue[Any] = queue.Queue()
        self.errors: list[str] = []

    def on_message(self, frame: Any) -> None:
        self.frames.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.append(f"{frame.headers.get('message')}: {frame.body!r}")


class RawReader:
    """A raw stomp.py subscription, started before the sink writes."""

    def __init__(self, broker: Broker, destination: str) -> None:
        self.collector = Collector()
        self.conn = raw_connection(broker, self.collector)
        receipt = unique("sub")
        waiter = stomp.listener.WaitingListener(receipt)
        self.conn.set_listener("waiter", waiter)
        self.conn.subscribe(destination, id="reader", ack="auto", headers={"receipt": receipt})
        waiter.wait_on_receipt()

    def read(self, count: int, timeout: float = 15.0) -> list[Any]:
        frames = []
        deadline = time.monotonic() + timeout
        try:
            while len(frames) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"read {len(frames)} of {count}: {self.collector.errors}"
                try:
                    frames.append(self.collector.frames.get(timeout=remaining))
                except queue.Empty:
                    continue
        finally:
            self.conn.disconnect()
        return frames


def frame_envelope(frame: Any) -> Envelope:
    return Envelope(
        subject=frame.headers["destination"],
        payload=frame.body,
        headers={name: [value] for name, value in frame.headers.items()},
    )


# ---------------------------------------------------------------- conformance


class _Harness:
    tmp: Path
    broker: Broker

    @pytest.fixture(autouse=True)
    def _harness(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp_path
        self.broker = request.getfixturevalue(self.dialect)

    dialect = "activemq"


class _QueueSource(_Harness, SourceConformance):
    def new_address(self) -> str:
        return f"/queue/{unique('conformance')}"

    def make_source(self, address: str) -> Source:
        # The route name (hence the subscription name) follows the address: a second
        # source for it resumes the first one's subscription.
        return make_source(self.tmp, self.broker, address, name=f"r-{address.split('/')[-1]}")

    async def produce(
        self, address: str, payloads: Sequence[bytes], headers: dict[str, str]
    ) -> None:
        await asyncio.to_thread(raw_send, self.broker, address, payloads, headers)


class _TopicSource(_QueueSource):
    """Durable wildcard topic subscriptions: `address` names the topic tree."""

    def new_address(self) -> str:
        return unique("conformance")

    def make_source(self, address: str) -> Source:
        return make_source(self.tmp, self.broker, self.broker.topic(address), name=f"r-{address}")

    async def produce(
        self, address: str, payloads: Sequence[bytes], headers: dict[str, str]
    ) -> None:
        topic = f"/topic/{address}.sub.leaf"
        await asyncio.to_thread(raw_send, self.broker, topic, payloads, headers)


class TestActiveMQQueueSourceConformance(_QueueSource):
    dialect = "activemq"


class TestActiveMQTopicSourceConformance(_TopicSource):
    dialect = "activemq"


class TestRabbitMQQueueSourceConformance(_QueueSource):
    dialect = "rabbitmq"


class TestRabbitMQTopicSourceConformance(_TopicSource):
    dialect = "rabbitmq"


class _QueueSink(_Harness, SinkConformance):
    def new_address(self) -> str:
        return f"/queue/{unique('conformance')}"

    def make_sink(self, address: str) -> Sink:
        return make_sink(self.tmp, self.broker, address)

    async def prepare(self, address: str) -> Any:
        return await asyncio.to_thread(RawReader, self.broker, address)

    async def consume(self, address: str, state: Any, count: int) -> list[Envelope]:
        frames = await asyncio.to_thread(state.read, count)
        return [frame_envelope(frame) for frame in frames]


class TestActiveMQSinkConformance(_QueueSink):
    dialect = "activemq"


class TestRabbitMQSinkConformance(_QueueSink):
    dialect = "rabbitmq"
