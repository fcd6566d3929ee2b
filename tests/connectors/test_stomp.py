"""The STOMP connector against both real brokers: ActiveMQ Classic and RabbitMQ's STOMP plugin.

The conformance suites run per dialect, on queues and on durable wildcard topic
subscriptions. The raw side of each test (producing into the source, reading what the sink
wrote) is plain stomp.py. Fault tests pause (SIGSTOP) or restart the shared brokers of
deploy/dev/services.sh through the `services` fixture, which brings them back afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import stomp  # type: ignore[import-untyped]
from stomp.utils import Frame  # type: ignore[import-untyped]

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.connector import send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    ConnectionLost,
    HeaderError,
    MappingError,
    MessageRejected,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.threads import Completions
from natsbridge.connectors.stomp import connector
from natsbridge.connectors.stomp.client import Endpoint, StompClient, parse_url
from natsbridge.connectors.stomp.config import StompConnection
from natsbridge.connectors.stomp.errors import (
    StompAccessRefused,
    StompNotFound,
    StompRefused,
    StompUnavailable,
    from_error_frame,
    translate,
)
from natsbridge.connectors.stomp.kind import StompOrigin as Origin
from natsbridge.connectors.stomp.message import ack_frame, encode_frame, nack_frame, send_frame
from natsbridge.connectors.stomp.sink import StompDestinationSink
from natsbridge.connectors.stomp.source import StompDestinationSource, subscription_headers
from natsbridge.mappings import stomp as stomp_mapping
from natsbridge.mappings.headers import (
    STOMP_CONTENT_TYPE,
    STOMP_DESTINATION,
    decode_text_value,
    encode_value,
    escape_header_name,
    validate_headers,
)
from tests.connectors.helpers import (
    receive_n,
    receive_nothing,
    run,
    take_shared,
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


ROUTES: dict[int, Route] = {}


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
    ROUTES[id(source)] = route
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


# ---------------------------------------------------------------- clean-up

QUEUES: list[str] = []
"""STOMP queues the current test named; RabbitMQ keeps them (durable) until deleted."""


def queue_name(prefix: str) -> str:
    """A fresh `/queue/...` destination, deleted from RabbitMQ after the test."""
    name = unique(prefix)
    QUEUES.append(name)
    return f"/queue/{name}"


def delete_rabbitmq_queues(names: Sequence[str]) -> None:
    """Delete RabbitMQ queues through the management API (best effort)."""
    base = os.environ.get("NATSBRIDGE_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
    auth = base64.b64encode(b"guest:guest").decode()
    for name in names:
        request = urllib.request.Request(
            f"{base}/api/queues/%2F/{urllib.parse.quote(name, safe='')}",
            method="DELETE",
            headers={"Authorization": f"Basic {auth}"},
        )
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=5).close()


@pytest.fixture(autouse=True)
def _delete_queues() -> Iterator[None]:
    yield
    names = list(QUEUES)
    QUEUES.clear()
    if names:
        delete_rabbitmq_queues(names)


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

    def read(self, count: int, timeout: float = 15.0, close: bool = True) -> list[Any]:
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
            if close:
                self.conn.disconnect()
        return frames


# ---------------------------------------------------------------- durable subscriptions


def drop_durable(broker: Broker, destination: str, name: str) -> None:
    """Remove durable subscription `name` (best effort, bounded), so reruns leave nothing behind."""
    done = threading.Event()

    class Done(stomp.ConnectionListener):  # type: ignore[misc]
        def on_receipt(self, frame: Any) -> None:
            done.set()

        def on_error(self, frame: Any) -> None:
            done.set()

    conn = stomp.Connection12([broker.host_port], vhost="/", auto_decode=False)
    conn.set_listener("done", Done())
    try:
        if broker.dialect == "activemq":
            conn.connect(broker.login, broker.passcode, wait=True, headers={"client-id": name})
            conn.unsubscribe(name, headers={"activemq.subscriptionName": name, "receipt": "x"})
        else:
            conn.connect(broker.login, broker.passcode, wait=True)
            durable = {"durable": "true", "auto-delete": "false", "x-queue-name": name}
            conn.subscribe(destination, id=name, ack="auto", headers=durable)
            conn.unsubscribe(name, headers={**durable, "receipt": "x"})
        done.wait(5)
    except Exception:  # cleanup only: never hide the test's own outcome
        pass
    finally:
        with contextlib.suppress(Exception):
            conn.disconnect()


@pytest.fixture
def durables() -> Iterator[list[tuple[Broker, str, str]]]:
    """Durable subscriptions a test created: (broker, destination, name), dropped afterwards."""
    created: list[tuple[Broker, str, str]] = []
    yield created
    for broker, destination, name in dict.fromkeys(created):
        drop_durable(broker, destination, name)


# ---------------------------------------------------------------- payloads and headers


def test_source_keeps_binary_payload_and_escaped_header_values(
    broker: Broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        destination = queue_name("binary")
        source = make_source(tmp_path, broker, destination)
        await source.connect()
        try:
            payloads = [NASTY_PAYLOAD, b"", b"\x00"]
            await asyncio.to_thread(raw_send, broker, destination, payloads, NASTY_HEADERS)
            received = await receive_n(source, len(payloads))
            assert [m.envelope.payload for m in received] == payloads
            for message in received:
                envelope = message.envelope
                for name, value in NASTY_HEADERS.items():
                    assert decode_text_value(envelope.header(name) or "") == value, name
                validate_headers(envelope.headers)  # every one is a valid NATS header
                assert envelope.subject == destination
                assert envelope.header(STOMP_DESTINATION) == destination
                assert envelope.origin == Origin("broker", "stomp", destination=destination)
                message.ack(None)
            await receive_nothing(source, 0.5)
        finally:
            await source.close()

    run(scenario())


def test_sink_writes_binary_payload_and_escaped_headers(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        destination = queue_name("binary-out")
        reader = await asyncio.to_thread(RawReader, broker, destination)
        sink = make_sink(tmp_path, broker, destination)
        await sink.connect()
        try:
            headers = {
                escape_header_name(name): [encode_value(value)]
                for name, value in {**NASTY_HEADERS, "X:Name\\n": "v"}.items()
            }
            typed = {**headers, STOMP_CONTENT_TYPE: ["text/plain; charset=utf-8"]}
            # Headers a SEND must never take from the envelope.
            reserved = {"receipt": ["x"], "message-id": ["m"], "transaction": ["t"]}
            await asyncio.gather(
                send_one(sink, Envelope(destination, NASTY_PAYLOAD, {**headers, **reserved})),
                send_one(sink, Envelope(destination, b"", typed)),
            )
        finally:
            await sink.close()
        first, second = await asyncio.to_thread(reader.read, 2)
        assert first.body == NASTY_PAYLOAD
        assert second.body == b""
        for name, value in {**NASTY_HEADERS, "X:Name\\n": "v"}.items():
            assert first.headers[name] == value, name
        assert first.headers["content-type"] == "application/octet-stream"
        assert second.headers["content-type"] == "text/plain; charset=utf-8"
        assert first.headers["persistent"] == "true"
        assert "transaction" not in first.headers
        assert first.headers["message-id"] != "m"

    run(scenario())


def test_headers_survive_sink_to_source_round_trip(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        destination = queue_name("round")
        source = make_source(tmp_path, broker, destination)
        sink = make_sink(tmp_path, broker, destination)
        await source.connect()
        await sink.connect()
        try:
            headers = {
                escape_header_name(name): [encode_value(value)]
                for name, value in {**NASTY_HEADERS, "a:b": "c\nd", "Plain": "x y"}.items()
            }
            await send_one(sink, Envelope(destination, NASTY_PAYLOAD, headers))
            [message] = await receive_n(source, 1)
            assert message.envelope.payload == NASTY_PAYLOAD
            for name, values in headers.items():
                assert message.envelope.headers[name] == values, name
            message.ack(None)
        finally:
            await sink.close()
            await source.close()

    run(scenario())


def test_activemq_wildcard_subscription_gives_the_real_destination(
    activemq: Broker, tmp_path: Path, durables: list[tuple[Broker, str, str]]
) -> None:
    async def scenario() -> None:
        tree = unique("quotes")
        source = make_source(tmp_path, activemq, f"/topic/{tree}.>")
        durables.append((activemq, f"/topic/{tree}.>", source.subscription))
        await source.connect()
        try:
            for leaf in ("NYSE.IBM", "NASDAQ.AAPL"):
                await asyncio.to_thread(raw_send, activemq, f"/topic/{tree}.{leaf}", [b"q"])
            await asyncio.to_thread(raw_send, activemq, f"/topic/other-{tree}.x", [b"no"])
            received = await receive_n(source, 2)
            # The route's `to.subject` is "out.{{destination}}".
            template = source_route(source).templates["subject"]
            got = [(m.envelope.subject, template.render(m.envelope)) for m in received]
            assert got == [
                (f"/topic/{tree}.NYSE.IBM", f"out.{tree}.NYSE.IBM"),
                (f"/topic/{tree}.NASDAQ.AAPL", f"out.{tree}.NASDAQ.AAPL"),
            ]
            for message in received:
                message.ack(None)
            await receive_nothing(source, 0.5)
        finally:
            await source.close()

    run(scenario())


def source_route(source: StompDestinationSource) -> Route:
    """The route a test source was made for (kept by make_source)."""
    route = ROUTES[id(source)]
    return route


def test_durable_subscription_keeps_messages_published_while_closed(
    broker: Broker, tmp_path: Path, durables: list[tuple[Broker, str, str]]
) -> None:
    async def scenario() -> None:
        tree = unique("durable")
        destination = broker.topic(tree)
        name = unique("r")
        first = make_source(tmp_path, broker, destination, name=name)
        durables.append((broker, destination, first.subscription))
        assert first.subscription == f"natsbridge-{name}"
        await first.connect()  # creates the subscription
        await first.close()
        payloads = [f"while-down-{i}".encode() for i in range(20)]
        await asyncio.to_thread(raw_send, broker, f"/topic/{tree}.a", payloads)
        second = make_source(tmp_path, broker, destination, name=name)
        await second.connect()
        try:
            received = await receive_n(second, len(payloads))
            assert [m.envelope.payload for m in received] == payloads
            for message in received:
                message.ack(None)
            await receive_nothing(second, 0.5)
        finally:
            await second.close()

    run(scenario())


def test_permanent_nack_is_not_redelivered(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        destination = queue_name("poison")
        source = make_source(tmp_path, broker, destination)
        await source.connect()
        try:
            await asyncio.to_thread(raw_send, broker, destination, [b"poison", b"fine"])
            poison, fine = await receive_n(source, 2)
            poison.ack(MappingError("cannot map"))
            fine.ack(None)
            await receive_nothing(source, 1.0)
        finally:
            await source.close()

    run(scenario())


def test_subscription_prefetch_follows_max_in_flight(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        destination = queue_name("prefetch")
        source = make_source(tmp_path, broker, destination, max_in_flight=5)
        await source.connect()
        try:
            payloads = [str(i).encode() for i in range(12)]
            await asyncio.to_thread(raw_send, broker, destination, payloads)
            first = await receive_n(source, 5)
            await receive_nothing(source, 0.5)  # the broker holds the rest back
            for message in first:
                message.ack(None)
            rest = await receive_n(source, 5)
            assert [m.envelope.payload for m in first + rest] == payloads[:10]
            for message in rest:
                message.ack(None)
            last = await receive_n(source, 2)
            for message in last:
                message.ack(None)
        finally:
            await source.close()

    run(scenario())


def test_activemq_nack_dead_letters_at_once(activemq: Broker) -> None:
    """Why the activemq dialect reconnects instead of NACKing: ActiveMQ never redelivers."""
    probe = unique("nack").replace("-", "_")
    destination = f"/queue/{probe}"
    raw_send(activemq, destination, [b"nacked"], {"probe_id": probe})
    collector = Collector()
    conn = raw_connection(activemq, collector)
    try:
        conn.subscribe(destination, id="s", ack="client-individual")
        frame = collector.frames.get(timeout=10)
        conn.nack(frame.headers["ack"])
        with pytest.raises(queue.Empty):
            collector.frames.get(timeout=1.0)  # not redelivered
        selector = {"selector": f"probe_id = '{probe}'"}
        conn.subscribe("/queue/ActiveMQ.DLQ", id="dlq", ack="auto", headers=selector)
        dead = collector.frames.get(timeout=10)
        assert dead.body == b"nacked" and dead.headers["subscription"] == "dlq"
    finally:
        conn.disconnect()


# ---------------------------------------------------------------- refusals


def test_wrong_passcode_is_permanent_and_never_shown(broker: Broker, tmp_path: Path) -> None:
    secret = f"wrong-{unique('pw')}"

    async def scenario() -> None:
        source = make_source(tmp_path, broker, queue_name("auth"), connection={"passcode": secret})
        sink = make_sink(tmp_path, broker, connection={"passcode": secret})
        for endpoint in (source, sink):
            with pytest.raises(StompAccessRefused) as caught:
                await endpoint.connect()
            assert isinstance(caught.value, PermanentError)
            assert secret not in str(caught.value)
            assert broker.url in str(caught.value)
            await endpoint.close()

    run(scenario())


def test_sink_refuses_destinations_of_another_dialect(broker: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = make_sink(tmp_path, broker)
        await sink.connect()
        try:
            foreign = "/exchange/x/y" if broker.dialect == "activemq" else "/temp-topic/x"
            for destination in (foreign, "no-prefix", "/queue/"):
                with pytest.raises(MappingError):
                    await send_one(sink, Envelope(destination, b"x"))
        finally:
            await sink.close()

    run(scenario())


def test_rabbitmq_refused_send_is_isolated_and_dead_lettered_alone(
    rabbitmq: Broker, tmp_path: Path
) -> None:
    """RabbitMQ's ERROR frames name no receipt: the sink finds the refused message anyway."""

    async def scenario() -> None:
        good = queue_name("good")
        bad = f"/exchange/{unique('missing')}/key"
        reader = await asyncio.to_thread(RawReader, rabbitmq, good)
        sink = make_sink(tmp_path, rabbitmq)
        await sink.connect()
        envelopes = [Envelope(good, f"m{i}".encode()) for i in range(30)]
        envelopes.insert(15, Envelope(bad, b"refused"))
        outcome: dict[bytes, BaseException | None] = {}
        try:
            pending = envelopes
            for _ in range(10):  # what the runtime does: retry what failed retryably
                results = await asyncio.gather(
                    *(send_one(sink, e) for e in pending), return_exceptions=True
                )
                retry = []
                for envelope, result in zip(pending, results, strict=True):
                    if isinstance(result, RetryableError):
                        retry.append(envelope)
                    else:
                        outcome[envelope.payload] = result
                if not retry:
                    break
                await sink.connect()
                pending = retry
        finally:
            await sink.close()
        assert isinstance(outcome.pop(b"refused"), StompNotFound)
        assert outcome == {e.payload: None for e in envelopes if e.subject == good}
        # Sends confirmed just before the connection closed are sent again: duplicates.
        expected = {e.payload for e in envelopes if e.subject == good}
        got: set[bytes] = set()
        while got != expected:
            [frame] = await asyncio.to_thread(reader.read, 1, close=False)
            got.add(frame.body)
        reader.conn.disconnect()

    run(scenario())


# ---------------------------------------------------------------- headers that steer the broker

# Each of these made ActiveMQ drop the connection (no ERROR frame) or RabbitMQ refuse the
# SEND, when a SEND carried it as it came.
BROKER_DIRECTIVES = {
    "transformation": "jms-map-xml",
    "expires": "abc",
    "priority": "",
    "timestamp": "abc",
    "JMSXGroupSeq": "99999999999",
    "AMQ_SCHEDULED_DELAY": "abc",
    "AMQ_SCHEDULED_CRON": "bad",
    "persistent": "maybe",
    "expiration": "abc",
    "user-id": "someone-else",
    "exclusive": "true",
    "x-message-ttl": "abc",
    "reply-to": "/bad",
    "message-id": "7",
}


def test_send_headers_keep_the_broker_out_of_a_messages_hands() -> None:
    nats = {escape_header_name(k): [encode_value(v)] for k, v in BROKER_DIRECTIVES.items()}
    nats |= {"priority-ok": ["x"], "X-App": ["1"], "Carried-transformation": ["kept"]}
    content_type, headers = stomp_mapping.send_headers(
        {**nats, STOMP_CONTENT_TYPE: ["text/plain"], "JMSXGroupID": ["g"]}, "rabbitmq"
    )
    assert content_type == "text/plain"
    assert headers == {
        "Carried-transformation": "kept",  # the message's own comes first
        "Carried-expires": "abc",
        "Carried-priority": "",
        "Carried-timestamp": "abc",
        "Carried-JMSXGroupSeq": "99999999999",
        "Carried-AMQ_SCHEDULED_DELAY": "abc",
        "Carried-AMQ_SCHEDULED_CRON": "bad",
        "Carried-expiration": "abc",
        "Carried-user-id": "someone-else",
        "Carried-exclusive": "true",
        "Carried-x-message-ttl": "abc",
        "Carried-reply-to": "/bad",
        "priority-ok": "x",
        "X-App": "1",
        "JMSXGroupID": "g",
    }
    _, fine = stomp_mapping.send_headers(
        {"priority": ["4"], "expires": ["0"], "reply-to": ["/temp-queue/r"]}, "activemq"
    )
    assert fine == {"priority": "4", "expires": "0", "reply-to": "/temp-queue/r"}


def test_a_send_whose_expires_has_passed_is_refused_not_handed_to_the_broker() -> None:
    def frame(expires: int) -> bytes:
        envelope = Envelope("/queue/q", b"p", {"expires": [str(expires)]})
        return send_frame(envelope, "/queue/q", "1", True, "activemq")

    with pytest.raises(MessageRejected, match="expired before delivery"):
        frame(1)  # ActiveMQ would confirm it and discard it unread
    later = int((time.time() + 3600) * 1000)
    assert f"\nexpires:{later}\n".encode() in frame(later)
    assert b"\nexpires:0\n" in frame(0)  # 0: never expires


@pytest.mark.parametrize("text", ["a\x00b", "\x00"])
def test_a_nul_never_reaches_a_frame_header(text: str) -> None:
    with pytest.raises(HeaderError):
        stomp_mapping.escape_header(text)
    for headers in ({"X": [encode_value(text)]}, {escape_header_name(text): ["v"]}):
        with pytest.raises(HeaderError):
            send_frame(Envelope("/queue/q", b"", headers), "/queue/q", "1", True, "activemq")


def test_sink_delivers_messages_that_carry_broker_directives(
    broker: Broker, tmp_path: Path
) -> None:
    """Every directive between ordinary messages, one send each: all confirmed, none
    dropped the connection, and the directives arrive renamed."""

    async def scenario() -> None:
        destination = queue_name("directives")
        reader = await asyncio.to_thread(RawReader, broker, destination)
        sink = make_sink(tmp_path, broker, destination)
        await sink.connect()
        envelopes = []
        for name, value in BROKER_DIRECTIVES.items():
            envelopes.append(Envelope(destination, b"ordinary"))
            envelopes.append(Envelope(destination, name.encode(), {name: [encode_value(value)]}))
        envelopes.append(Envelope(destination, b"ordinary"))
        try:
            results = await sink.send_batch(envelopes)
        finally:
            await sink.close()
        assert results == [None] * len(envelopes)
        frames = await asyncio.to_thread(reader.read, len(envelopes))
        assert [f.body for f in frames] == [e.payload for e in envelopes]
        by_body = {f.body: f.headers for f in frames}
        assert by_body[b"transformation"]["Carried-transformation"] == "jms-map-xml"
        assert "transformation" not in by_body[b"transformation"]
        assert by_body[b"x-message-ttl"]["Carried-x-message-ttl"] == "abc"

    run(scenario())


def test_runtime_dead_letters_a_message_that_drops_a_real_brokers_connection(
    activemq: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """A SEND that ActiveMQ drops the connection over (here `transformation` written raw,
    past the header table, standing for any such header) is dead-lettered as poison
    between 40 ordinary messages, which all arrive, in order."""
    from natsbridge.bridge.runtime.mapper import RouteMapper
    from natsbridge.bridge.runtime.route import RouteRunner
    from natsbridge.connectors.stomp import sink as sink_module
    from tests.runtime.test_route import MemoryBuffer, MemorySource

    raw_send_frame = sink_module.send_frame

    def poisoned(envelope: Envelope, *args: Any) -> bytes:
        frame = raw_send_frame(envelope, *args)
        if envelope.payload == b"20":
            frame = frame.replace(b"\n\n", b"\ntransformation:jms-map-xml\n\n", 1)
        return frame

    monkeypatch.setattr(sink_module, "send_frame", poisoned)
    destination = queue_name("poison")
    route, conn, bridge = load_route(
        tmp_path,
        activemq,
        sink={"destination": destination},
        max_in_flight=8,
        retry={"initial": "10ms", "max": "100ms"},
    )
    nats = load_config(tmp_path / f"{route.name}.yaml").connections["nats"]
    source, buffer = MemorySource(41), MemoryBuffer()
    sink = connector.sink(route, conn, bridge)
    runner = RouteRunner(route, source, sink, RouteMapper(route, bridge, nats), buffer)  # type: ignore[arg-type]
    reader = RawReader(activemq, destination)

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        while len(buffer.settled) + len(buffer.dead) < 41:
            await asyncio.sleep(0.01)
        runner.stop()
        await asyncio.wait_for(running, 30)

    run(asyncio.wait_for(scenario(), 60))
    assert [payload for payload, _ in buffer.dead] == [b"20"]
    assert buffer.dead[0][1].startswith("poison: ")
    assert runner.stats.dead_lettered == {"poison": 1}
    assert 4 <= runner.stats.reconnects <= 6  # the first loss, three alone, one after
    frames = reader.read(40)
    assert [f.body for f in frames] == [str(n).encode() for n in range(41) if n != 20]


def test_a_retryable_error_frame_about_the_only_send_is_a_lost_connection(
    rabbitmq: Broker, tmp_path: Path
) -> None:
    """RabbitMQ closes the connection after an ERROR frame that names no receipt: the one
    send waiting is told ConnectionLost, so that the runtime reconnects (and can count
    the message as poison) instead of resending on a dead connection."""
    _, conn, _ = load_route(tmp_path, rabbitmq, sink={"destination": "/queue/x"})

    async def scenario() -> None:
        client = StompClient(conn, "test")
        client._loop = asyncio.get_running_loop()
        client._completions = Completions()
        client._logged_in = True
        _, future = client.expect()
        client._on_error(Frame("ERROR", {"message": "resource_locked"}, b"RESOURCE_LOCKED"))
        with pytest.raises(ConnectionLost, match="resource_locked"):
            await asyncio.wait_for(future, 5)
        _, refused = client.expect()
        client._on_error(Frame("ERROR", {"message": "Processing error"}, b""))
        with pytest.raises(StompRefused):
            await asyncio.wait_for(refused, 5)

    run(scenario())


# ---------------------------------------------------------------- heart-beats and restarts


async def wait_lost(source: StompDestinationSource, within: float) -> float:
    """Seconds until `source.receive` raised ConnectionLost (fails after `within`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < within:
        try:
            extra = await source.receive(10, 0.2)
        except ConnectionLost:
            return loop.time() - start
        assert not extra, "nothing was produced meanwhile"
    raise AssertionError(f"no ConnectionLost within {within}s")


async def reconnect(endpoint: StompDestinationSource, within: float) -> None:
    """`connect()` until it works, with the runtime's kind of back-off."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    delay = 0.2
    while True:
        try:
            await endpoint.connect()
            return
        except RetryableError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def test_lost_heartbeat_is_detected_and_the_source_resumes(
    broker: Broker, tmp_path: Path, services: Any
) -> None:
    heartbeat = 1.0

    async def scenario() -> None:
        destination = queue_name("heartbeat")
        fast = {"heartbeat": f"{heartbeat}s"}
        source = make_source(tmp_path, broker, destination, connection=fast)
        sink = make_sink(tmp_path, broker, connection=fast)
        await source.connect()
        await sink.connect()
        try:
            payloads = [f"hb-{i}".encode() for i in range(10)]
            await asyncio.to_thread(raw_send, broker, destination, payloads)
            received = await receive_n(source, 10)
            for message in received[:4]:
                message.ack(None)
            await asyncio.sleep(0.3)  # the acks are on the wire before the broker stops
            with services.paused(broker.service):
                # A send in flight is not left hanging either (its frame may still reach
                # the broker: the runtime's retry would make a duplicate, never a loss).
                late = Envelope(queue_name("late"), b"late")
                sending = asyncio.ensure_future(send_one(sink, late))
                # stomp.py's heart-beat thread (1.5 intervals) or the watchdog (2.5) notices.
                lost_after = await wait_lost(source, within=6 * heartbeat)
                with pytest.raises(ConnectionLost):
                    await asyncio.wait_for(sending, 3 * heartbeat)
                # Settling a message of the lost connection is harmless.
                received[4].ack(None)
            assert lost_after <= 4 * heartbeat
            await reconnect(source, within=30)
            again = await receive_n(source, 6, timeout=30)
            assert sorted(m.envelope.payload for m in again) == sorted(payloads[4:])
            for message in again:
                message.ack(None)
            await receive_nothing(source, 0.5)
        finally:
            await sink.close()
            await source.close()

    run(scenario())


def test_watchdog_closes_when_the_heartbeat_thread_is_stuck(
    activemq: Broker, tmp_path: Path, services: Any
) -> None:
    """stomp.py's heart-beat thread can hang behind a blocked send; the loop notices anyway."""

    async def scenario() -> None:
        source = make_source(
            tmp_path, activemq, queue_name("watchdog"), connection={"heartbeat": "1s"}
        )
        await source.connect()
        try:
            client = source._client
            assert client is not None
            client._conn.heartbeat_terminate_event.set()  # stomp.py's thread stops watching
            with services.paused(activemq.service):
                lost_after = await wait_lost(source, within=6)
            assert 2.0 <= lost_after <= 4.5  # WATCHDOG_FACTOR intervals, not stomp.py's 1.5
        finally:
            await source.close()

    run(scenario())


def test_activemq_restart_resumes_the_durable_subscription(
    activemq: Broker, tmp_path: Path, services: Any, durables: list[tuple[Broker, str, str]]
) -> None:
    async def scenario() -> None:
        tree = unique("restart")
        destination = activemq.topic(tree)
        source = make_source(tmp_path, activemq, destination, connection={"heartbeat": "2s"})
        durables.append((activemq, destination, source.subscription))
        await source.connect()
        try:
            before = [f"before-{i}".encode() for i in range(30)]
            await asyncio.to_thread(raw_send, activemq, f"/topic/{tree}.x", before)
            received = await receive_n(source, 30)
            for message in received[:10]:
                message.ack(None)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(services.restart, "activemq")
            await wait_lost(source, within=10)
            after = [f"after-{i}".encode() for i in range(10)]
            await asyncio.to_thread(raw_send, activemq, f"/topic/{tree}.x", after)
            await reconnect(source, within=60)
            again = await receive_n(source, 30, timeout=30)
            assert [m.envelope.payload for m in again] == before[10:] + after
            for message in again:
                message.ack(None)
            await receive_nothing(source, 0.5)
        finally:
            await source.close()

    run(scenario())


# ---------------------------------------------------------------- TLS (stomp+ssl)


@pytest.fixture
def tls_proxy(activemq: Broker, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-terminating proxy in front of ActiveMQ: (port, CA file of its self-signed cert)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            *files,
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    ready: queue.Queue[int] = queue.Queue()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*activemq.host_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        ready.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    task = loop.create_task(serve())

    def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    yield ready.get(timeout=10), cert
    loop.call_soon_threadsafe(task.cancel)
    thread.join(5)


def test_stomp_ssl_round_trip(
    activemq: Broker, tmp_path: Path, tls_proxy: tuple[int, Path]
) -> None:
    port, ca_file = tls_proxy
    tls_url = f"stomp+ssl://localhost:{port}"

    async def scenario() -> None:
        destination = queue_name("tls")
        verified = {"url": tls_url, "tls": {"ca_file": str(ca_file)}}
        source = make_source(tmp_path, activemq, destination, connection=verified)
        sink = make_sink(tmp_path, activemq, connection={"url": tls_url, "tls": {"verify": False}})
        untrusted = make_sink(tmp_path, activemq, connection={"url": tls_url})
        await source.connect()
        await sink.connect()
        try:
            payloads = [NASTY_PAYLOAD, *(f"tls-{i}".encode() for i in range(50))]
            await asyncio.gather(*(send_one(sink, Envelope(destination, p)) for p in payloads))
            received = await receive_n(source, len(payloads))
            assert [m.envelope.payload for m in received] == payloads
            for message in received:
                message.ack(None)
            await receive_nothing(source, 0.3)
            with pytest.raises(ConnectionLost):  # a self-signed cert, not in the system CAs
                await untrusted.connect()
        finally:
            await sink.close()
            await source.close()

    run(scenario())


# ---------------------------------------------------------------- pure logic


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("stomp://broker:61613", Endpoint("broker", 61613, False)),
        ("stomp://broker", Endpoint("broker", 61613, False)),
        ("stomp+ssl://broker", Endpoint("broker", 61614, True)),
        ("stomp+ssl://10.0.0.1:61612/", Endpoint("10.0.0.1", 61612, True)),
    ],
)
def test_parse_url(url: str, expected: Endpoint) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["amqp://x", "stomp://user:secret@host:1", "stomp://host:1/vhost", "stomp://:1", "stomp://h:x"],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(PermanentError) as caught:
        parse_url(url)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("message", "body", "kind"),
    [
        ("User name [admin] or password is invalid.", "", StompAccessRefused),
        ("Bad CONNECT", "Access refused for user 'guest'\n", StompAccessRefused),
        ("Bad CONNECT", "Virtual host 'nope' access denied", StompAccessRefused),
        ("access_refused", "ACCESS_REFUSED - access to exchange 'x' refused", StompAccessRefused),
        ("not_found", "NOT_FOUND - no exchange 'nonexistent-x' in vhost '/'", StompNotFound),
        ("Processing error", "NOT_FOUND - no exchange 'x' in vhost '/'", StompNotFound),
        (
            "Broker: b - Client: natsbridge-r already connected from tcp://127.0.0.1:1",
            "javax.jms.InvalidClientIDException: Broker: b - Client: x already connected\n\tat x",
            StompUnavailable,
        ),
        ("Invalid header", "'message-id' is not allowed on 'SEND'.\n", StompRefused),
        ("", "", StompRefused),
    ],
)
def test_error_frames_become_typed_errors(message: str, body: str, kind: type) -> None:
    error = from_error_frame({"message": message}, body.encode(), "stomp://b:1", "s3cr3t")
    assert type(error) is kind
    assert "\tat" not in str(error) and "s3cr3t" not in str(error)
    assert str(error).startswith("stomp: stomp://b:1: ")
    leaked = from_error_frame({"message": "bad s3cr3t"}, b"s3cr3t", "w", "s3cr3t")
    assert "s3cr3t" not in str(leaked)


def test_driver_exceptions_become_connection_lost() -> None:
    for exc in (
        stomp.exception.ConnectFailedException(),
        stomp.exception.NotConnectedException(),
        BrokenPipeError(32, "Broken pipe"),
        RuntimeError("surprise"),
    ):
        error = translate(exc, "stomp://b:1")
        assert isinstance(error, ConnectionLost) and error.__cause__ is exc
    refused = StompRefused("x")
    assert translate(refused) is refused


def test_frames_escape_names_and_values_and_keep_bodies() -> None:
    frame = encode_frame("SEND", [("a:b", "c\nd\\e\r"), ("plain", "v")], b"\x00x\x00")
    assert frame == b"SEND\na\\cb:c\\nd\\\\e\\r\nplain:v\n\n\x00x\x00\x00"
    assert ack_frame("ID:host-1:2") == b"ACK\nid:ID\\chost-1\\c2\n\n\x00"
    assert nack_frame("t1", requeue=False) == b"NACK\nid:t1\nrequeue:false\n\n\x00"
    envelope = Envelope(
        "/queue/q",
        b"",
        {
            "destination": ["/queue/elsewhere"],
            "persistent": ["false"],
            "Stomp-Message-Id": ["ID:1"],
            "X": ["1", "2"],
        },
    )
    sent = send_frame(envelope, "/queue/q", "7", persistent=True, dialect="activemq")
    assert sent == (
        b"SEND\ndestination:/queue/q\ncontent-type:application/octet-stream\n"
        b"content-length:0\nreceipt:7\npersistent:true\nX:1\n\n\x00"
    )


def test_subscription_headers_per_dialect() -> None:
    amq = dict(subscription_headers("activemq", "/topic/a.>", "natsbridge-r", True, 1000))
    assert amq == {
        "destination": "/topic/a.>",
        "id": "natsbridge-r",
        "ack": "client-individual",
        # 1000 is one of ActiveMQ's defaults, which a durable subscriber would not get.
        "activemq.prefetchSize": "1001",
        "activemq.subscriptionName": "natsbridge-r",
    }
    queue_ = dict(subscription_headers("activemq", "/queue/q", "natsbridge-r", True, 10))
    assert "activemq.subscriptionName" not in queue_ and queue_["activemq.prefetchSize"] == "10"
    rabbit = dict(subscription_headers("rabbitmq", "/exchange/x/#", "natsbridge-r", True, 10))
    assert rabbit == {
        "destination": "/exchange/x/#",
        "id": "natsbridge-r",
        "ack": "client-individual",
        "prefetch-count": "10",
        "durable": "true",
        "auto-delete": "false",
        "x-queue-name": "natsbridge-r",
    }
    plain = dict(subscription_headers("rabbitmq", "/topic/k", "natsbridge-r", False, 10))
    assert "durable" not in plain
    with pytest.raises(MappingError):
        subscription_headers("activemq", "/exchange/x", "n", True, 1)


def test_client_configures_tls_heartbeats_and_vhost(rabbitmq: Broker, tmp_path: Path) -> None:
    _, conn, _ = load_route(
        tmp_path,
        rabbitmq,
        sink={"destination": "/queue/x"},
        connection={
            "url": "stomp+ssl://broker.example:61614",
            "heartbeat": "2.5s",
            "tls": {"ca_file": "/ca.pem", "verify": False},
        },
    )
    client = StompClient(conn, "test")
    stomp_conn = client._connection(parse_url(conn.url))
    ssl_params = stomp_conn.transport.get_ssl(("broker.example", 61614))
    assert ssl_params["ca_certs"] == "/ca.pem" and ssl_params["verify"] is False
    assert stomp_conn.heartbeats == (2500, 2500)
    assert stomp_conn.transport.vhost == "/"  # RabbitMQ's default virtual host


def test_receive_waits_out_its_timeout_after_stale_wakeups(broker: Broker, tmp_path: Path) -> None:
    """A wake-up whose messages an earlier call took must not end a later wait early."""

    async def scenario() -> None:
        destination = queue_name("stale")
        source = make_source(tmp_path, broker, destination)
        await source.connect()
        try:
            await asyncio.to_thread(raw_send, broker, destination, [b"x"] * 300)
            received = 0
            while received < 300:  # small takes: wake-ups outlive the messages they announced
                batch = await source.receive(7, 5.0)
                assert batch, "receive returned nothing before its timeout"
                for message in batch:
                    message.ack(None)
                received += len(batch)
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert not await source.receive(10, 0.5)
            assert loop.time() - start >= 0.45
        finally:
            await source.close()

    run(scenario())


# ---------------------------------------------------------------- replicas


@pytest.mark.parametrize(
    ("broker_name", "kind"),
    [
        ("rabbitmq", "queue"),
        ("rabbitmq", "durable topic"),
        ("activemq", "queue"),
        ("activemq", "virtual topic"),
    ],
)
def test_replicas_of_a_route_share_its_messages(
    broker_name: str,
    kind: str,
    tmp_path: Path,
    durables: list[tuple[Broker, str, str]],
    request: pytest.FixtureRequest,
) -> None:
    """Two replicas (same route): each message goes to one (README: Workers and replicas)."""
    broker: Broker = request.getfixturevalue(broker_name)
    name = unique("r")
    tree = unique("shared")
    if kind == "queue":
        destination = send_to = queue_name("shared")
    elif kind == "durable topic":
        destination, send_to = broker.topic(tree), f"/topic/{tree}.a"
    else:
        destination = f"/queue/Consumer.{name}.VirtualTopic.{tree}"
        send_to = f"/topic/VirtualTopic.{tree}"

    async def scenario() -> None:
        replicas = [make_source(tmp_path, broker, destination, name=name) for _ in range(2)]
        if kind == "durable topic":
            durables.append((broker, destination, replicas[0].subscription))
        for replica in replicas:
            await replica.connect()
        try:
            payloads = [b"%d" % i for i in range(100)]
            await asyncio.to_thread(raw_send, broker, send_to, payloads)
            taken = await take_shared(replicas, len(payloads))
            assert sorted(taken[0] + taken[1]) == sorted(payloads)
            assert taken[0] and taken[1], "one replica took everything"
        finally:
            for replica in replicas:
                await replica.close()

    run(scenario())
