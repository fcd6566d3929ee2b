"""The AMQP connector against the real RabbitMQ from the harness (services.sh).

Every test uses fresh queue and exchange names and deletes them afterwards. Raw pika
(BlockingConnection, tests/connectors/amqp_helpers.py) arranges and inspects the broker.
The restart test stops and starts the shared RabbitMQ through the `services` fixture.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pika
import pytest
from pika.spec import BasicProperties

from natsbridge.bridge.connector import Requester, Responder, Sink, Source, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeTimeout,
    ConnectionLost,
    HeaderError,
    MappingError,
    MessageRejected,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.registry import load_connector
from natsbridge.connectors.amqp import connector
from natsbridge.connectors.amqp.client import connection_parameters
from natsbridge.connectors.amqp.config import AmqpConnection
from natsbridge.connectors.amqp.driver import FramePublisher
from natsbridge.connectors.amqp.errors import (
    AmqpAccessRefused,
    AmqpNotFound,
    AmqpPreconditionFailed,
    AmqpUnavailable,
    from_reply,
    translate,
)
from natsbridge.connectors.amqp.message import properties_for
from natsbridge.connectors.amqp.sink import AmqpExchangeSink
from natsbridge.connectors.amqp.source import AmqpQueueSource
from tests.connectors.amqp_helpers import (
    load_route,
    make_tls_files,
    raw,
    rpc_server,
    tls_proxy,
)
from tests.connectors.conformance import (
    SinkConformance,
    SourceConformance,
    receive_n,
    receive_nothing,
    run,
    unique,
)

pytestmark = pytest.mark.amqp


class _Harness:
    """Per test: the broker URL, a temp dir for configs, and names to delete afterwards."""

    amqp_url: str
    tmp: Path
    queues: list[str]
    exchanges: list[str]

    @pytest.fixture(autouse=True)
    def _harness(self, amqp_url: str, tmp_path: Path) -> Iterator[None]:
        self.amqp_url = amqp_url
        self.tmp = tmp_path
        self.queues = []
        self.exchanges = []
        yield
        try:
            with raw(amqp_url) as broker:
                broker.delete(self.queues, self.exchanges)
        except Exception:  # cleanup is best effort (the broker may be restarting)
            pass

    def source(self, name: str | None = None, **spec: Any) -> AmqpQueueSource:
        name = name or unique("src")
        route, connection, bridge = load_route(
            self.tmp,
            self.amqp_url,
            {"connection": "rmq", **spec},
            {"connection": "nats", "subject": "out.{{routing_key}}"},
            name=name,
        )
        source = connector.source(route, connection, bridge)
        assert isinstance(source, Source) and isinstance(source, Responder)
        self.queues.append(source.queue)
        if spec.get("exchange"):
            self.exchanges.append(spec["exchange"])
        return source

    def sink(self, **spec: Any) -> AmqpExchangeSink:
        spec.setdefault("routing_key", "{{subject}}")
        route, connection, bridge = load_route(
            self.tmp,
            self.amqp_url,
            {"connection": "nats", "subject": "in.>"},
            {"connection": "rmq", **spec},
            name=unique("snk"),
        )
        sink = connector.sink(route, connection, bridge)
        assert isinstance(sink, Sink) and isinstance(sink, Requester)
        if spec.get("exchange"):
            self.exchanges.append(spec["exchange"])
        return sink


# ---------------------------------------------------------------- conformance


class TestQueueSourceConformance(_Harness, SourceConformance):
    """Consuming a named queue, which the source declares."""

    def make_source(self, address: str) -> Source:
        return self.source(name=f"r-{address}", queue=address)

    async def produce(
        self, address: str, payloads: Sequence[bytes], headers: dict[str, str]
    ) -> None:
        properties = BasicProperties(delivery_mode=2, headers=dict(headers) or None)
        with raw(self.amqp_url) as broker:
            for payload in payloads:
                broker.publish("", address, payload, properties)


class TestExchangeSourceConformance(_Harness, SourceConformance):
    """Consuming an exchange through the bridge's own queue natsbridge.<route>."""

    def make_source(self, address: str) -> Source:
        return self.source(name=f"r-{address}", exchange=address, binding_keys=["events.#"])

    async def produce(
        self, address: str, payloads: Sequence[bytes], headers: dict[str, str]
    ) -> None:
        properties = BasicProperties(delivery_mode=2, headers=dict(headers) or None)
        with raw(self.amqp_url) as broker:
            for i, payload in enumerate(payloads):
                broker.publish(address, f"events.{i % 3}", payload, properties)


class TestSinkConformance(_Harness, SinkConformance):
    """Publishing to a topic exchange the sink declares; a queue bound with # observes it."""

    def make_sink(self, address: str) -> Sink:
        return self.sink(exchange=address)

    async def prepare(self, address: str) -> Any:
        with raw(self.amqp_url) as broker:
            broker.exchange(address)
            broker.queue(address)
            broker.bind(address, address)
        self.queues.append(address)
        return None

    async def consume(self, address: str, state: Any, count: int) -> list[Envelope]:
        with raw(self.amqp_url) as broker:
            messages = broker.get(address, count)
        return [
            Envelope(
                subject=method.routing_key,
                payload=body,
                headers={k: [str(v)] for k, v in (properties.headers or {}).items()},
            )
            for method, properties, body in messages
        ]


# ---------------------------------------------------------------- source


class TestSource(_Harness):
    def test_envelope_fields_and_binding_keys(self) -> None:
        exchange = unique("ex")

        async def scenario() -> None:
            source = self.source(exchange=exchange, binding_keys=["orders.*.created", "audit.#"])
            await source.connect()
            try:
                with raw(self.amqp_url) as broker:
                    for key in ("orders.eu.created", "orders.eu.deleted", "audit", "audit.x.y"):
                        properties = BasicProperties(
                            message_id=f"id-{key}", reply_to="replies", timestamp=1700000000
                        )
                        broker.publish(exchange, key, key.encode(), properties)
                got = await receive_n(source, 3)
                assert [m.envelope.subject for m in got] == [
                    "orders.eu.created",
                    "audit",
                    "audit.x.y",
                ]
                first = got[0].envelope
                assert first.payload == b"orders.eu.created"
                assert first.msg_id == "id-orders.eu.created"
                assert first.reply == "replies"
                assert first.timestamp == 1700000000.0
                assert first.origin is not None
                assert first.origin.kind == "amqp"
                assert first.origin.connection == "rmq"
                assert first.origin.exchange == exchange
                assert first.origin.routing_key == "orders.eu.created"
                assert first.origin.queue == source.queue
                assert source.queue.startswith("natsbridge.")
                assert first.header("Amqp-Exchange") == exchange
                assert first.header("Amqp-Routing-Key") == "orders.eu.created"
                assert first.header("Amqp-Queue") == source.queue
                assert first.header("Amqp-Message-Id") == "id-orders.eu.created"
                for message in got:
                    message.ack(None)
                await receive_nothing(source, 0.5)
            finally:
                await source.close()

        run(scenario())

    def test_out_of_order_settling_from_threads(self) -> None:
        """Acks coalesce correctly whatever the order and thread; nacked ones come back."""
        queue = unique("q")

        async def scenario() -> None:
            source = self.source(queue=queue, prefetch=100)
            await source.connect()
            try:
                with raw(self.amqp_url) as broker:
                    for i in range(60):
                        broker.publish("", queue, str(i).encode())
                got = await receive_n(source, 60)
                by_payload = {int(m.envelope.payload): m for m in got}
                retry = {7, 30, 59}
                order = sorted(by_payload, key=lambda i: (i * 37) % 61)  # a shuffle

                def settle(numbers: list[int]) -> None:
                    for i in numbers:
                        error = ConnectionLost("later") if i in retry else None
                        by_payload[i].ack(error)
                        by_payload[i].ack(None)  # a second settle is a no-op

                threads = [threading.Thread(target=settle, args=(order[k::3],)) for k in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                again = await receive_n(source, 3)
                assert sorted(int(m.envelope.payload) for m in again) == sorted(retry)
                for message in again:
                    message.ack(None)
                await receive_nothing(source, 0.5)
            finally:
                await source.close()
            with raw(self.amqp_url) as broker:
                assert broker.count(queue) == 0  # every ack reached the broker

        run(scenario())

    def test_prefetch_bounds_unsettled_deliveries(self) -> None:
        queue = unique("q")

        async def scenario() -> None:
            source = self.source(queue=queue, prefetch=5)
            await source.connect()
            try:
                with raw(self.amqp_url) as broker:
                    for i in range(20):
                        broker.publish("", queue, str(i).encode())
                first = await receive_n(source, 5)
                await receive_nothing(source, 0.5)  # the broker holds the rest back
                for message in first:
                    message.ack(None)
                rest = await receive_n(source, 5)
                assert [m.envelope.payload for m in rest] == [str(i).encode() for i in range(5, 10)]
            finally:
                await source.close()

        run(scenario())

    def test_permanent_error_rejects_to_the_dead_letter_exchange(self) -> None:
        queue, dlx, dlq = unique("q"), unique("dlx"), unique("dlq")
        self.queues += [dlq]
        self.exchanges += [dlx]
        with raw(self.amqp_url) as broker:
            broker.exchange(dlx, "fanout")
            broker.queue(dlq)
            broker.bind(dlq, dlx, "")
            # An existing queue with arguments: the source must use it as it is.
            broker.queue(queue, **{"x-dead-letter-exchange": dlx})

        async def scenario() -> None:
            source = self.source(queue=queue)
            await source.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.publish("", queue, b"poison")
                    broker.publish("", queue, b"fine")
                poison, fine = await receive_n(source, 2)
                poison.ack(MessageRejected("cannot be mapped"))
                fine.ack(None)
                await receive_nothing(source, 0.5)  # not redelivered
            finally:
                await source.close()
            with raw(self.amqp_url) as broker:
                [(_, properties, body)] = broker.get(dlq, 1)
                assert body == b"poison"
                assert properties.headers["x-death"][0]["reason"] == "rejected"

        run(scenario())

    def test_receive_times_out_empty_and_close_is_idempotent(self) -> None:
        async def scenario() -> None:
            source = self.source(queue=unique("q"))
            with pytest.raises(ConnectionLost):
                await source.receive(10, 0.1)  # not connected yet
            await source.connect()
            started = time.monotonic()
            assert list(await source.receive(10, 0.3)) == []
            assert 0.25 < time.monotonic() - started < 2
            await source.close()
            await source.close()
            with pytest.raises(ConnectionLost):
                await source.receive(10, 0.1)

        run(scenario())


# ---------------------------------------------------------------- sink


class TestSink(_Harness):
    def test_unroutable_mandatory_send_is_rejected_alone(self) -> None:
        exchange, queue = unique("ex"), unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange=exchange)
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)
                    broker.bind(queue, exchange, "ok.#")
                keys = ["ok.1", "nowhere.1", "ok.2", "nowhere.2", "ok.3"]
                results = await asyncio.gather(
                    *(send_one(sink, Envelope(subject=k, payload=k.encode())) for k in keys),
                    return_exceptions=True,
                )
                assert [r is None for r in results] == [True, False, True, False, True]
                rejected = results[1]
                assert isinstance(rejected, MessageRejected)
                assert "312" in str(rejected) and "nowhere.1" in str(rejected)
                await send_one(sink, Envelope(subject="ok.4", payload=b"after"))
                with raw(self.amqp_url) as broker:
                    got = broker.get(queue, 4)
                assert [body for _, _, body in got] == [b"ok.1", b"ok.2", b"ok.3", b"after"]
            finally:
                await sink.close()

        run(scenario())

    def test_not_mandatory_drops_unroutable_and_default_exchange(self) -> None:
        queue = unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="", mandatory=False, persistent=False)
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)
                await send_one(sink, Envelope(subject=unique("nowhere"), payload=b"dropped"))
                await send_one(sink, Envelope(subject=queue, payload=b"kept", msg_id="m-1"))
                with raw(self.amqp_url) as broker:
                    [(_, properties, body)] = broker.get(queue, 1)
                assert body == b"kept"
                assert properties.delivery_mode is None
                assert properties.message_id == "m-1"
            finally:
                await sink.close()

        run(scenario())

    def test_names_that_were_not_utf8_or_reserved_come_back_as_they_were(self) -> None:
        """A table key read as bytes, and a renamed Nats-* name, leave with their own names."""
        queue = unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)
                headers = {"%ED%B3%BFkey": ["v"], "%4Eats-Rollup": ["all"]}
                await send_one(sink, Envelope(subject=queue, payload=b"p", headers=headers))
                with raw(self.amqp_url) as broker:
                    [(_, properties, _)] = broker.get(queue, 1)
                assert properties.headers == {b"\xffkey": "v", "Nats-Rollup": "all"}
            finally:
                await sink.close()

        run(scenario())

    def test_bad_messages_fail_alone_before_reaching_the_broker(self) -> None:
        queue = unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)
                with pytest.raises(MappingError):
                    await send_one(sink, Envelope(subject="k" * 256, payload=b""))
                with pytest.raises(MappingError):
                    bad = {"Amqp-Expiration": ["soon"]}
                    await send_one(sink, Envelope(subject=queue, payload=b"", headers=bad))
                with pytest.raises(HeaderError):
                    bad = {"X": ["1"], "Amqp-Header-Types": ['{"X": "nonsense"}']}
                    await send_one(sink, Envelope(subject=queue, payload=b"", headers=bad))
                await send_one(sink, Envelope(subject=queue, payload=b"still fine"))
                with raw(self.amqp_url) as broker:
                    [(_, _, body)] = broker.get(queue, 1)
                assert body == b"still fine"
            finally:
                await sink.close()

        run(scenario())

    def test_missing_exchange_without_declare_is_permanent_then_reconnects(self) -> None:
        async def scenario() -> None:
            sink = self.sink(exchange=unique("missing"), declare=False)
            await sink.connect()
            try:
                with pytest.raises(AmqpNotFound):
                    await send_one(sink, Envelope(subject="k", payload=b""))
                with pytest.raises(ConnectionLost):  # the channel is gone: reconnect
                    await send_one(sink, Envelope(subject="k", payload=b""))
                await sink.connect()
            finally:
                await sink.close()

        run(scenario())

    def test_not_connected_and_close_is_idempotent(self) -> None:
        async def scenario() -> None:
            sink = self.sink(exchange="")
            with pytest.raises(ConnectionLost):
                await send_one(sink, Envelope(subject="k", payload=b""))
            await sink.connect()
            await sink.close()
            await sink.close()
            with pytest.raises(ConnectionLost):
                await send_one(sink, Envelope(subject="k", payload=b""))

        run(scenario())


# ---------------------------------------------------------------- properties and headers

PROPERTIES = {
    "content_type": "application/json",
    "content_encoding": "gzip",
    "priority": 7,
    "correlation_id": "corr-1",
    "reply_to": "reply.queue",
    "expiration": "60000",
    "message_id": "msg-1",
    "timestamp": 1714564800,
    "type": "order.created",
    "user_id": "guest",
    "app_id": "shop",
}
TABLE = {
    "x-string": "plain text",
    "x-int": 42,
    "x-big": 2**40,
    "x-negative": -7,
    "x-bool": True,
    "x-false": False,
    "x-decimal": Decimal("12.34"),
    "x-timestamp": dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC),  # pika decodes as UTC
    "x-bytes": b"\x00\xff binary",
    "x-void": None,
    "x-nested": {"a": 1, "b": {"c": [1, "two", False]}, "d": b"\x01"},
    "x-array": [1, "x", {"k": "v"}],
    "Unusual name: é": "needs escaping",
}


class TestPropertiesAndHeaders(_Harness):
    def test_round_trip_source_envelope_sink(self) -> None:
        queue_in, queue_out = unique("in"), unique("out")
        self.queues.append(queue_out)

        async def scenario() -> None:
            source = self.source(queue=queue_in)
            sink = self.sink(exchange="")
            await source.connect()
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue_out)
                    properties = BasicProperties(delivery_mode=2, headers=TABLE, **PROPERTIES)
                    broker.publish("", queue_in, b"payload", properties)
                [message] = await receive_n(source, 1)
                envelope = message.envelope
                assert envelope.header("Amqp-Content-Type") == "application/json"
                assert envelope.header("Amqp-Priority") == "7"
                assert envelope.header("Amqp-Correlation-Id") == "corr-1"
                assert envelope.header("x-int") == "42"
                assert envelope.header("x-bool") == "true"
                assert envelope.header("x-string") == "plain text"
                assert envelope.msg_id == "msg-1"
                assert envelope.reply == "reply.queue"
                assert envelope.timestamp == 1714564800.0
                # The route's mapping would render the target address here.
                envelope.subject = queue_out
                await send_one(sink, envelope)
                message.ack(None)
                with raw(self.amqp_url) as broker:
                    [(_, out, body)] = broker.get(queue_out, 1)
                assert body == b"payload"
                for name, value in PROPERTIES.items():
                    assert getattr(out, name) == value, name
                assert out.delivery_mode == 2
                headers = dict(out.headers)
                assert headers.pop("Amqp-Exchange") == ""
                assert headers.pop("Amqp-Routing-Key") == queue_in
                assert headers.pop("Amqp-Queue") == queue_in
                assert headers == TABLE
                for name in ("x-int", "x-bool", "x-decimal", "x-timestamp", "x-bytes"):
                    assert type(headers[name]) is type(TABLE[name]), name
            finally:
                await source.close()
                await sink.close()

        run(scenario())

    def test_nats_headers_become_a_table(self) -> None:
        queue = unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)
                headers = {
                    "X-One": ["1"],
                    "X-Many": ["a", "b"],
                    "Bridge-Origin": ["bridge-a"],
                    "Amqp-Content-Type": ["text/plain"],
                    "Amqp-Priority": ["3"],
                    "Amqp-User-Id": ["not-the-publisher"],  # RabbitMQ would refuse it
                }
                await send_one(sink, Envelope(subject=queue, payload=b"p", headers=headers))
                with raw(self.amqp_url) as broker:
                    [(_, out, _)] = broker.get(queue, 1)
                assert out.content_type == "text/plain"
                assert out.priority == 3
                assert out.user_id is None
                assert out.headers == {
                    "X-One": "1",
                    "X-Many": ["a", "b"],
                    "Bridge-Origin": "bridge-a",
                }
            finally:
                await sink.close()

        run(scenario())


# ---------------------------------------------------------------- request / reply


class TestRequestReply(_Harness):
    def test_nats_request_to_amqp_rpc_server(self) -> None:
        service = unique("rpc")

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            try:
                with rpc_server(self.amqp_url, service) as seen:
                    requests = [
                        Envelope(subject=service, payload=f"hello {i}".encode()) for i in range(5)
                    ]
                    replies = await asyncio.gather(*(sink.request(r, 5.0) for r in requests))
                assert [r.payload for r in replies] == [f"HELLO {i}".encode() for i in range(5)]
                assert all(r.header("X-Served") == "yes" for r in replies)
                correlation_ids = {p.correlation_id for p in seen}
                assert len(correlation_ids) == 5
                assert {r.header("Amqp-Correlation-Id") for r in replies} == correlation_ids
                assert all(p.reply_to.startswith("amq.rabbitmq.reply-to.") for p in seen)
            finally:
                await sink.close()

        run(scenario())

    def test_request_timeout_and_unroutable_request(self) -> None:
        queue = unique("silent")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            try:
                with raw(self.amqp_url) as broker:
                    broker.queue(queue)  # nobody consumes it
                with pytest.raises(BridgeTimeout):
                    await sink.request(Envelope(subject=queue, payload=b"?"), 0.5)
                with pytest.raises(MessageRejected):
                    await sink.request(Envelope(subject=unique("nobody"), payload=b"?"), 5.0)
            finally:
                await sink.close()

        run(scenario())

    def test_amqp_rpc_client_to_responder(self) -> None:
        queue = unique("svc")

        async def scenario() -> None:
            source = self.source(queue=queue)
            await source.connect()
            try:
                with raw(self.amqp_url) as client:
                    reply_queue = client.channel.queue_declare(
                        "", exclusive=True, auto_delete=True
                    ).method.queue
                    request = BasicProperties(reply_to=reply_queue, correlation_id="c-42")
                    client.publish("", queue, b"question", request)
                    [incoming] = await receive_n(source, 1)
                    assert incoming.envelope.reply == reply_queue
                    answer = Envelope(
                        subject="ignored",
                        payload=b"answer",
                        headers={"X-Answer": ["1"], "Amqp-Content-Type": ["text/plain"]},
                    )
                    await source.respond(incoming.envelope, answer)
                    incoming.ack(None)
                    [(_, properties, body)] = client.get(reply_queue, 1)
                assert body == b"answer"
                assert properties.correlation_id == "c-42"
                assert properties.content_type == "text/plain"
                assert properties.headers == {"X-Answer": "1"}
                with pytest.raises(MessageRejected):
                    await source.respond(Envelope(subject="x", payload=b""), answer)
            finally:
                await source.close()

        run(scenario())


# ---------------------------------------------------------------- connection loss


class TestBrokerRestart(_Harness):
    def test_outage_then_reconnect_redelivers_unacked(self, services: Any) -> None:
        queue = unique("q")

        async def scenario() -> None:
            source = self.source(queue=queue, prefetch=50)
            sink = self.sink(exchange="")
            await source.connect()
            await sink.connect()
            payloads = [f"m-{i}".encode() for i in range(20)]
            with raw(self.amqp_url) as broker:
                for payload in payloads:
                    broker.publish("", queue, payload, BasicProperties(delivery_mode=2))
            got = await receive_n(source, 20)
            for message in got[:5]:
                message.ack(None)
            await asyncio.sleep(0.2)  # let those acks reach the broker

            await asyncio.to_thread(services.stop, "rabbitmq")
            try:
                with pytest.raises(ConnectionLost):
                    await receive_n(source, 1, timeout=15)
                with pytest.raises(RetryableError):
                    await send_one(sink, Envelope(subject=queue, payload=b"during outage"))
                with pytest.raises(RetryableError):
                    await sink.connect()
                with pytest.raises(RetryableError):
                    await source.connect()
                for message in got[5:]:
                    message.ack(None)  # too late: a dead channel's tags are ignored
            finally:
                await asyncio.to_thread(_start_rabbitmq, services)

            await _connect_with_retry(source)
            await _connect_with_retry(sink)
            try:
                again = await receive_n(source, 15)
                assert [m.envelope.payload for m in again] == payloads[5:]
                for message in again:
                    message.ack(None)
                await send_one(sink, Envelope(subject=queue, payload=b"after"))
                [after] = await receive_n(source, 1)
                assert after.envelope.payload == b"after"
                after.ack(None)
                await receive_nothing(source, 0.5)
            finally:
                await source.close()
                await sink.close()

        run(scenario())

    def test_pending_sends_fail_when_the_connection_drops(self) -> None:
        """A connection killed by the broker fails in-flight sends with ConnectionLost."""
        queue = unique("q")
        self.queues.append(queue)

        async def scenario() -> None:
            sink = self.sink(exchange="")
            await sink.connect()
            with raw(self.amqp_url) as broker:
                broker.queue(queue)
            sends = [
                asyncio.ensure_future(send_one(sink, Envelope(subject=queue, payload=b"x" * 1024)))
                for _ in range(2000)
            ]
            await asyncio.sleep(0)
            await asyncio.to_thread(_close_connections, f"natsbridge {sink._route_name} sink")
            results = await asyncio.gather(*sends, return_exceptions=True)
            failures = [r for r in results if r is not None]
            assert all(isinstance(f, ConnectionLost) for f in failures), failures[:3]
            with pytest.raises(ConnectionLost):
                await send_one(sink, Envelope(subject=queue, payload=b""))
            await sink.connect()
            await send_one(sink, Envelope(subject=queue, payload=b"back"))
            await sink.close()

        run(scenario())


def _start_rabbitmq(services: Any) -> None:
    """services.start, once more if the first start fails (the harness's node can be slow)."""
    try:
        services.start("rabbitmq")
    except Exception:
        time.sleep(2)
        services.start("rabbitmq")


async def _connect_with_retry(endpoint: Source | Sink, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await endpoint.connect()
            return
        except RetryableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def _close_connections(name_prefix: str) -> None:
    """Force-close the broker side of our connections whose name starts with the prefix."""
    import subprocess

    from tests.conftest import SERVICES_SH

    listing = subprocess.run(
        ["bash", str(SERVICES_SH), "rabbitmqctl", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in listing.splitlines():
        if name_prefix in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["bash", str(SERVICES_SH), "rabbitmqctl", "close_connection", pid, "test"],
                capture_output=True,
                check=False,
            )


# ---------------------------------------------------------------- connection settings, errors


class TestConnection(_Harness):
    def test_registry_resolves_the_entry_point(self) -> None:
        assert load_connector("amqp") is connector

    def test_parameters_from_config(self) -> None:
        config = AmqpConnection(
            kind="amqp",
            url="amqps://user:s3cret@rabbit.example:5671/orders%2Feu?channel_max=64",
            heartbeat=15,
            connect_timeout=3,
            tls={"verify": False},
        )
        params = connection_parameters(config, "natsbridge test")
        assert params.host == "rabbit.example" and params.port == 5671
        assert params.virtual_host == "orders/eu"
        assert params.credentials.username == "user"
        assert params.heartbeat == 15
        assert params.socket_timeout == 3 and params.stack_timeout == 3
        assert params.channel_max == 64
        assert params.ssl_options is not None
        assert params.ssl_options.server_hostname == "rabbit.example"
        assert params.client_properties["connection_name"] == "natsbridge test"
        plain = AmqpConnection(kind="amqp", url="amqp://h")
        params = connection_parameters(plain, "x")
        assert params.ssl_options is None and params.virtual_host == "/" and params.port == 5672

    def test_bad_url_option_is_permanent_and_redacted(self) -> None:
        config = AmqpConnection(kind="amqp", url="amqp://user:hunter2@h/?bogus=1")
        with pytest.raises(PermanentError) as caught:
            connection_parameters(config, "x")
        assert "hunter2" not in str(caught.value)

    def test_wrong_password_is_permanent_and_never_shown(self, caplog: Any) -> None:
        url = self.amqp_url.replace("guest:guest@", "guest:wrong-pass-123@")

        async def scenario() -> None:
            sink = AmqpExchangeSink(*_sink_args(self, url))
            with pytest.raises(AmqpAccessRefused) as caught:
                await sink.connect()
            assert "wrong-pass-123" not in str(caught.value)

        run(scenario())
        assert "wrong-pass-123" not in caplog.text

    def test_unreachable_broker_is_retryable(self) -> None:
        async def scenario() -> None:
            sink = AmqpExchangeSink(*_sink_args(self, "amqp://guest:guest@127.0.0.1:1/"))
            started = time.monotonic()
            with pytest.raises(ConnectionLost, match="Connection refused"):
                await sink.connect()
            assert time.monotonic() - started < 5

        run(scenario())

    def test_tls_with_ca_file_and_without_verification(self) -> None:
        """amqps:// through a TLS-terminating proxy in front of the harness RabbitMQ."""
        ca, cert, key = make_tls_files(self.tmp)
        upstream = urlsplit(self.amqp_url)
        queue = unique("tls")
        self.queues.append(queue)

        def config(port: int, tls: dict[str, Any]) -> AmqpConnection:
            url = f"amqps://guest:guest@localhost:{port}/%2F"
            return AmqpConnection(kind="amqp", url=url, tls=tls, connect_timeout=5)

        async def scenario(port: int) -> None:
            route, _, _ = load_route(
                self.tmp,
                self.amqp_url,
                {"connection": "nats", "subject": "in.>"},
                {"connection": "rmq", "exchange": "", "routing_key": "{{subject}}"},
                name=unique("tls"),
            )
            for tls in ({"ca_file": str(ca)}, {"verify": False}):
                sink = AmqpExchangeSink(route, config(port, tls), "rmq")
                await sink.connect()
                try:
                    await send_one(sink, Envelope(subject=queue, payload=b"over tls"))
                finally:
                    await sink.close()
            untrusted = AmqpExchangeSink(route, config(port, {}), "rmq")
            with pytest.raises(RetryableError):  # the system CAs do not know this one
                await untrusted.connect()

        with raw(self.amqp_url) as broker:
            broker.queue(queue)
        with tls_proxy(cert, key, (upstream.hostname or "", upstream.port or 5672)) as port:
            run(scenario(port))
        with raw(self.amqp_url) as broker:
            assert [body for _, _, body in broker.get(queue, 2)] == [b"over tls"] * 2

    def test_missing_vhost_is_permanent(self) -> None:
        url = self.amqp_url.rsplit("/", 1)[0] + "/" + unique("no-such-vhost")

        async def scenario() -> None:
            source = AmqpQueueSource(*_source_args(self, url))
            with pytest.raises(PermanentError):
                await source.connect()

        run(scenario())


def _sink_args(harness: _Harness, url: str) -> tuple[Any, AmqpConnection, str]:
    route, connection, _ = load_route(
        harness.tmp,
        url,
        {"connection": "nats", "subject": "in.>"},
        {"connection": "rmq", "exchange": "", "routing_key": "{{subject}}"},
        name=unique("r"),
    )
    return route, connection, "rmq"


def _source_args(harness: _Harness, url: str) -> tuple[Any, AmqpConnection, str]:
    route, connection, _ = load_route(
        harness.tmp,
        url,
        {"connection": "rmq", "queue": unique("q")},
        {"connection": "nats", "subject": "out"},
        name=unique("r"),
    )
    return route, connection, "rmq"


@pytest.mark.parametrize("size", [0, 1, 1024, 131_064, 300_000])
@pytest.mark.parametrize("mandatory", [True, False])
def test_frame_publisher_writes_exactly_pikas_bytes(size: int, mandatory: bool) -> None:
    """The sink's batched marshalling equals pika's basic_publish, frame for frame."""
    from pika import frame, spec

    written: list[bytes] = []
    max_body = 131_072 - 8
    frames = FramePublisher(written.extend, max_body, 3, "orders.ex", mandatory)
    body = bytes(i % 251 for i in range(size))
    plain = BasicProperties(delivery_mode=2)
    rich = BasicProperties(content_type="x/y", headers={"a": 1, "b": {"c": b"\x00"}}, priority=4)
    out: list[bytes] = []
    expected = b""
    for key, properties in [("k.1", plain), ("k.2", rich), ("k.1", plain), ("k.1", rich)]:
        frames.add(out, key, body, properties)
        publish = spec.Basic.Publish(exchange="orders.ex", routing_key=key, mandatory=mandatory)
        expected += frame.Method(3, publish).marshal()
        expected += frame.Header(3, size, properties).marshal()
        for start in range(0, size, max_body):
            expected += frame.Body(3, body[start : start + max_body]).marshal()
    frames.write(out)
    assert written == [expected]


def test_messages_without_id_share_properties_per_header_set() -> None:
    """Equal headers give one shared object (encoded once); an id or `fresh` a new one."""
    stamped = {"Bridge-Origin": ["b/nats"], "Bridge-Hops": ["1"]}
    first = properties_for(Envelope("k", b"1", dict(stamped)), True, "guest")
    again = properties_for(Envelope("k", b"2", {n: list(v) for n, v in stamped.items()}), True)
    assert again is not first  # another user: another object
    assert properties_for(Envelope("k", b"3", dict(stamped)), True, "guest") is first
    assert first.headers == {"Bridge-Origin": "b/nats", "Bridge-Hops": "1"}
    assert first.delivery_mode == 2
    other = properties_for(Envelope("k", b"4", {"Bridge-Origin": ["c/nats"]}), True, "guest")
    assert other is not first and other.headers == {"Bridge-Origin": "c/nats"}
    with_id = properties_for(Envelope("k", b"5", dict(stamped), msg_id="m1"), True, "guest")
    assert with_id is not first and with_id.message_id == "m1"
    fresh = properties_for(Envelope("k", b"6", dict(stamped)), True, "guest", fresh=True)
    assert fresh is not first and fresh.headers == first.headers


def test_reply_codes_become_typed_errors() -> None:
    assert isinstance(from_reply(404, "NOT_FOUND"), AmqpNotFound)
    assert isinstance(from_reply(403, "ACCESS_REFUSED"), AmqpAccessRefused)
    assert isinstance(from_reply(406, "PRECONDITION_FAILED - inequivalent arg"), PermanentError)
    assert isinstance(from_reply(406, "PRECONDITION_FAILED - x"), AmqpPreconditionFailed)
    timed_out = from_reply(
        406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out"
    )
    assert isinstance(timed_out, AmqpUnavailable)
    assert isinstance(from_reply(405, "RESOURCE_LOCKED"), RetryableError)
    assert isinstance(from_reply(320, "CONNECTION_FORCED"), ConnectionLost)
    assert isinstance(from_reply(312, "NO_ROUTE"), MessageRejected)
    assert isinstance(from_reply(541, "INTERNAL_ERROR"), RetryableError)
    assert isinstance(from_reply(530, "NOT_ALLOWED"), PermanentError)
    assert isinstance(translate(pika.exceptions.StreamLostError("eof")), ConnectionLost)
    assert isinstance(translate(pika.exceptions.UnroutableError([])), MessageRejected)
    assert isinstance(translate(pika.exceptions.NackError([])), MessageRejected)
    closed = translate(pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue"))
    assert isinstance(closed, AmqpNotFound) and closed.reply_code == 404
    assert isinstance(closed.__cause__, pika.exceptions.ChannelClosedByBroker)
