"""The NATS connector against a real nats-server with JetStream (services.sh, or one started here).

The conformance suites run on the shared server from the harness (`nats_url`). Auth and
restart tests start a private nats-server on another loopback port with its own store, so
restarting it never disturbs other tests using the shared one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.connector import Requester, Responder, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeTimeout,
    ConnectionLost,
    MessageRejected,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
)
from natsbridge.connectors.nats import connector
from natsbridge.connectors.nats.config import NatsConnection
from natsbridge.connectors.nats.driver import NatsClient
from natsbridge.connectors.nats.errors import NoResponders, StreamMissing
from natsbridge.connectors.nats.message import MultiHeaders, header_block
from natsbridge.connectors.nats.sink import derived_stream_subjects
from natsbridge.connectors.nats.source import CoreSource
from tests.connectors.helpers import (
    receive_n,
    receive_nothing,
    run,
    take_shared,
    unique,
)

pytestmark = pytest.mark.nats


# ---------------------------------------------------------------- config helpers


def _yaml(value: Any) -> str:
    """A YAML flow value (JSON is YAML)."""
    import json

    return json.dumps(value)


def load_route(
    directory: Path,
    servers: Sequence[str],
    source: dict[str, Any],
    sink: dict[str, Any],
    connection: dict[str, Any] | None = None,
    **route: Any,
) -> tuple[Route, NatsConnection, BridgeSettings]:
    """Write a one-route config to `directory` and load it the way the bridge does."""
    name = route.pop("name", unique("r"))
    conn = {"kind": "nats", "servers": list(servers), **(connection or {})}
    body = {"name": name, "from": {"connection": "nats", **source}}
    body["to"] = {"connection": "nats", **sink}
    body.update(route)
    path = directory / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: test-bridge}\n"
        f"connections:\n  nats: {_yaml(conn)}\n"
        f"routes:\n  - {_yaml(body)}\n"
    )
    config = load_config(path)
    [loaded] = config.routes
    nats_conn = config.connections["nats"]
    assert isinstance(nats_conn, NatsConnection)
    return loaded, nats_conn, config.bridge


def stream_name(address: str) -> str:
    return address.upper().replace(".", "_")


async def raw(url: str, keep_repeats: bool = False) -> Client:
    """nats-py's client; with `keep_repeats`, the connector's one (repeated headers kept)."""
    if not keep_repeats:
        return await nats.connect(url)
    client = NatsClient()
    await client.connect(url)
    return client


async def read_stream(url: str, stream: str, count: int) -> list[Envelope]:
    """The first `count` messages of `stream`, read with the raw client's direct get."""
    nc = await raw(url)
    try:
        jsm = nc.jsm()
        out = []
        for seq in range(1, count + 1):
            msg = await jsm.get_msg(stream, seq)
            headers = {k: [v] for k, v in (msg.headers or {}).items()}
            out.append(
                Envelope(subject=msg.subject or "", payload=msg.data or b"", headers=headers)
            )
        return out
    finally:
        await nc.close()


# ---------------------------------------------------------------- core source and responder


def test_replicas_of_a_core_source_share_its_messages(nats_url: str, tmp_path: Path) -> None:
    """Two processes of one config (same bridge id and route) take each message once."""

    async def scenario() -> None:
        address = unique("replicas")
        route, conn, bridge = load_route(
            tmp_path, [nats_url], {"subject": f"{address}.>"}, {"subject": "out"}
        )
        replicas = [connector.source(route, conn, bridge) for _ in range(2)]
        for replica in replicas:
            await replica.connect()
        nc = await raw(nats_url)
        try:
            for i in range(200):
                await nc.publish(f"{address}.{i}", str(i).encode())
            await nc.flush()
            taken = await take_shared(replicas, 200)
            assert sorted(taken[0] + taken[1]) == sorted(str(i).encode() for i in range(200))
            assert taken[0] and taken[1], "one replica took everything"
        finally:
            await nc.close()
            for replica in replicas:
                await replica.close()

    run(scenario())


def test_replicas_of_a_jetstream_source_share_its_durable(nats_url: str, tmp_path: Path) -> None:
    """Two processes of one config pull from one durable consumer: each message once."""

    async def scenario() -> None:
        address = unique("jsreplicas")
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": address, "jetstream": {"stream": stream_name(address)}},
            {"subject": "out"},
            max_in_flight=10,
        )
        replicas = [connector.source(route, conn, bridge) for _ in range(2)]
        for replica in replicas:
            await replica.connect()
        nc = await raw(nats_url)
        try:
            js = nc.jetstream()
            for start in range(0, 200, 50):
                await asyncio.gather(
                    *(js.publish(address, b"%d" % i) for i in range(start, start + 50))
                )
            taken = await take_shared(replicas, 200, batch=10)
            assert sorted(taken[0] + taken[1]) == sorted(b"%d" % i for i in range(200))
            assert taken[0] and taken[1], "one replica took everything"
        finally:
            await nc.close()
            for replica in replicas:
                await replica.close()

    run(scenario())


def test_core_source_receives_headers_reply_and_responds(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("core")
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": f"{address}.>", "queue_group": "bridge"},
            {"subject": "out"},
        )
        source = connector.source(route, conn, bridge)
        assert isinstance(source, CoreSource) and isinstance(source, Responder)
        await source.connect()
        nc = await raw(nats_url, keep_repeats=True)
        try:
            # A repeated header name: the wire format allows it and nothing may be lost.
            await nc.publish(
                f"{address}.a",
                b"one",
                reply="answer.here",
                headers=_repeated(
                    {"X-Multi": ["1", "2"], "X-One": ["a:b c"], "Nats-Rollup": ["all"]}
                ),
            )
            for i in range(50):
                await nc.publish(f"{address}.b.{i}", str(i).encode())
            await nc.flush()
            received = await receive_n(source, 51)
            first = received[0].envelope
            assert first.subject == f"{address}.a"
            assert first.payload == b"one"
            assert first.reply == "answer.here"
            # JetStream publish directives are dropped (mappings.headers)
            assert first.headers == {"X-Multi": ["1", "2"], "X-One": ["a:b c"]}
            assert first.origin is not None and first.origin.kind == "nats"
            assert first.origin.subject == f"{address}.a"
            assert [m.envelope.payload for m in received[1:]] == [
                str(i).encode() for i in range(50)
            ]
            for message in received:
                message.ack(None)
                message.ack(ConnectionLost("no-op for core NATS"))

            # Responder: a raw requester gets the bridge's answer.
            request = asyncio.ensure_future(nc.request(f"{address}.rpc", b"ping", timeout=5))
            [incoming] = await receive_n(source, 1)
            reply = Envelope(subject="", payload=b"pong", headers={"X-R": ["1", "2"]})
            await source.respond(incoming.envelope, reply)
            answer = await request
            assert answer.data == b"pong"
            assert isinstance(answer.headers, MultiHeaders)
            assert answer.headers.all == {"X-R": ["1", "2"]}
            with pytest.raises(MessageRejected):
                await source.respond(Envelope(subject="x", payload=b""), reply)
            await receive_nothing(source, 0.3)
        finally:
            await nc.close()
            await source.close()
            await source.close()
        with pytest.raises(ConnectionLost):
            await source.receive(1, 0.1)

    run(scenario())


def test_core_source_overload_drops_and_counts_slow_consumer(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import natsbridge.connectors.nats.source as source_module

    monkeypatch.setattr(source_module, "DEFAULT_QUEUE_MESSAGES", 10)
    monkeypatch.setattr(source_module, "DEFAULT_PENDING_MSGS", 10)

    async def scenario() -> None:
        address = unique("flood")
        route, conn, bridge = load_route(
            tmp_path, [nats_url], {"subject": address}, {"subject": "out"}, max_in_flight=1
        )
        source = connector.source(route, conn, bridge)
        assert isinstance(source, CoreSource)
        await source.connect()
        nc = await raw(nats_url)
        try:
            for i in range(500):
                await nc.publish(address, str(i).encode())
            await nc.flush()
            await asyncio.sleep(0.5)
            kept = await source.receive(1000, 0.5)
            kept = [*kept, *(await source.receive(1000, 0.5))]
            # Core NATS cannot slow the publisher down: what does not fit is dropped, counted.
            assert 10 <= len(kept) < 500
            assert source.link is not None and source.link.slow_consumer_drops > 0
            assert [m.envelope.payload for m in kept[:10]] == [str(i).encode() for i in range(10)]
        finally:
            await nc.close()
            await source.close()

    run(scenario())


def _repeated(headers: dict[str, list[str]]) -> Any:
    return header_block(headers)  # NatsClient (keep_repeats) publishes it as it is


def test_core_sink_sends_repeated_headers_and_reply(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("multi")
        route, conn, bridge = load_route(
            tmp_path, [nats_url], {"subject": "in"}, {"subject": address}
        )
        sink = connector.sink(route, conn, bridge)
        nc = await raw(nats_url)
        sub: Subscription = await nc.subscribe(address)
        await nc.flush()
        await sink.connect()
        try:
            env = Envelope(
                subject=address, payload=b"x", headers={"A": ["1", "2", "3"]}, reply="r.1"
            )
            await send_one(sink, env)
            msg = await sub.next_msg(timeout=5)
            assert msg.reply == "r.1"
            assert isinstance(msg.headers, dict) and msg.headers["A"] == "3"  # nats-py: last wins
        finally:
            await sink.close()
            await nc.close()

    run(scenario())


def test_publish_many_sends_each_message_in_order_in_one_write(nats_url: str) -> None:
    async def scenario() -> None:
        subject = unique("many")
        listener = await raw(nats_url)
        sub: Subscription = await listener.subscribe(f"{subject}.*")
        await listener.flush()
        client = await raw(nats_url, keep_repeats=True)
        assert isinstance(client, NatsClient)
        try:
            sent = [(f"{subject}.{n}", b"+ACK" * n) for n in range(5)]
            block = header_block({"A": ["1", "2"]})
            await client.publish_many([(s, "", None, d) for s, d in sent[:4]])
            await client.publish_many([(sent[4][0], "r.1", block, sent[4][1])])
            received = [await sub.next_msg(timeout=5) for _ in sent]
            assert [(m.subject, m.data) for m in received] == sent
            assert (received[4].reply, received[4].headers) == ("r.1", {"A": "2"})
            assert client.stats["out_msgs"] >= len(sent)
        finally:
            await client.close()
            await listener.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await client.publish_many([(subject, "", None, b"late")])

    run(scenario())


# ---------------------------------------------------------------- request / reply


def test_core_sink_request_reply(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("svc")
        route, conn, bridge = load_route(
            tmp_path, [nats_url], {"subject": "in"}, {"subject": address}
        )
        sink = connector.sink(route, conn, bridge)
        assert isinstance(sink, Requester)
        nc = await raw(nats_url)

        async def service(msg: Msg) -> None:
            await msg.respond(b"re:" + msg.data)

        async def ignore(msg: Msg) -> None:
            pass

        await nc.subscribe(address, cb=service)
        await nc.subscribe(f"{address}.silent", cb=ignore)
        await nc.flush()
        await sink.connect()
        try:
            reply = await sink.request(
                Envelope(subject=address, payload=b"q", headers={"X": ["y"]}), timeout=5
            )
            assert reply.payload == b"re:q"
            with pytest.raises(NoResponders) as no_one:
                await sink.request(Envelope(subject=f"{address}.nobody", payload=b"q"), 2)
            assert isinstance(no_one.value, RetryableError)
            with pytest.raises(BridgeTimeout):
                await sink.request(Envelope(subject=f"{address}.silent", payload=b"q"), 0.3)
        finally:
            await sink.close()
            await nc.close()

    run(scenario())


# ---------------------------------------------------------------- JetStream sink specifics


def test_exactly_once_same_msg_id_is_stored_once(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("dedup")
        stream = stream_name(address)
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "in.*"},
            {"subject": address, "jetstream": {"stream": stream, "duplicate_window": "1m"}},
            delivery="exactly_once",
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        try:
            for _ in range(2):
                await send_one(
                    sink, Envelope(subject=address, payload=b"once", msg_id="kafka:t:0:42")
                )
            await send_one(sink, Envelope(subject=address, payload=b"other", msg_id="kafka:t:0:43"))
            nc = await raw(nats_url)
            info = await nc.jsm().stream_info(stream)
            await nc.close()
            assert info.state.messages == 2
            [first, _] = await read_stream(nats_url, stream, 2)
            assert first.header("Nats-Msg-Id") == "kafka:t:0:42"
        finally:
            await sink.close()

    run(scenario())


def test_a_rollup_the_stream_does_not_permit_is_refused_for_good(
    nats_url: str, tmp_path: Path
) -> None:
    """nats-server answers 500 "rollup not permitted": retrying would block the route forever."""

    async def scenario() -> None:
        address = unique("rollup")
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "in.*"},
            {"subject": address, "jetstream": {"stream": stream_name(address)}},
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        try:
            rollup = Envelope(subject=address, payload=b"r", headers={"Nats-Rollup": ["all"]})
            with pytest.raises(MessageRejected, match="rollup not permitted"):
                await send_one(sink, rollup)
        finally:
            await sink.close()

    run(scenario())


def test_stream_created_with_derived_subjects(nats_url: str, tmp_path: Path) -> None:
    assert derived_stream_subjects("legacy.orders.{{routing_key}}", False) == ["legacy.orders.>"]
    assert derived_stream_subjects("a.b{{x}}.c", False) == ["a.>"]
    assert derived_stream_subjects("a.$1", False) == ["a.>"]
    assert derived_stream_subjects("a.b", True) == ["a.b"]

    async def scenario() -> None:
        prefix = unique("derived")
        stream = stream_name(prefix)
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "orders.*"},
            {"subject": prefix + ".{{wildcard(1)}}", "jetstream": {"stream": stream}},
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        try:
            nc = await raw(nats_url)
            info = await nc.jsm().stream_info(stream)
            await nc.close()
            assert info.config.subjects == [f"{prefix}.>"]
            assert info.config.duplicate_window == 120.0
            await send_one(sink, Envelope(subject=f"{prefix}.eu", payload=b"x"))
            with pytest.raises(MessageRejected, match=stream):
                await send_one(sink, Envelope(subject=f"elsewhere.{prefix}", payload=b"x"))
        finally:
            await sink.close()

    run(scenario())


def test_missing_stream_without_create_names_it(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        stream = stream_name(unique("missing"))
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "x.in", "jetstream": {"stream": stream, "create": False}},
            {"subject": "x.out", "jetstream": {"stream": stream, "create": False}},
        )
        for endpoint in (
            connector.sink(route, conn, bridge),
            connector.source(route, conn, bridge),
        ):
            with pytest.raises(StreamMissing, match=stream) as missing:
                await endpoint.connect()
            assert isinstance(missing.value, PermanentError)
            await endpoint.close()

    run(scenario())


def test_binds_to_an_existing_stream_and_pull_consumer(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        prefix = unique("bind")
        stream = stream_name(prefix)
        nc = await raw(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
        await js.add_consumer(
            stream, durable_name="mine", ack_policy="explicit", filter_subject=f"{prefix}.>"
        )
        await js.add_consumer(stream, durable_name="pushy", deliver_subject=f"{prefix}-deliver")
        for i in range(3):  # stream= adds Nats-Expected-Stream, which JetStream stores
            await js.publish(f"{prefix}.{i}", b"existing", stream=stream, headers={"X-I": str(i)})
        await nc.close()

        def route_for(durable: str) -> tuple[Route, NatsConnection, BridgeSettings]:
            js_source = {"stream": stream, "durable": durable, "create": False}
            return load_route(
                tmp_path,
                [nats_url],
                {"subject": f"{prefix}.>", "jetstream": js_source},
                {"subject": "out"},
            )

        source = connector.source(*route_for("mine"))
        await source.connect()
        try:
            received = await receive_n(source, 3)
            origins = [m.envelope.origin for m in received]
            assert [o.stream_seq for o in origins if o is not None] == [1, 2, 3]
            assert [m.envelope.headers for m in received] == [{"X-I": [str(i)]} for i in range(3)]
            for message in received:
                message.ack(None)
        finally:
            await source.close()
        for durable in ("pushy", "absent"):
            other = connector.source(*route_for(durable))
            with pytest.raises(PermanentError, match=durable):
                await other.connect()
            await other.close()

    run(scenario())


def test_messages_a_dead_bridge_held_come_back_first_and_in_order(
    nats_url: str, tmp_path: Path
) -> None:
    """A bridge killed after pulling (not acking) must not reorder what it held."""

    async def scenario() -> None:
        prefix = unique("rewind")
        stream, durable = stream_name(prefix), "natsbridge-rewind"
        js_source = {"stream": stream, "durable": durable, "ack_wait": "60s"}
        route = load_route(
            tmp_path,
            [nats_url],
            {"subject": f"{prefix}.*", "jetstream": js_source},
            {"subject": "out"},
        )
        first = connector.source(*route)
        await first.connect()  # creates the stream and the consumer
        await first.close()
        nc = await raw(nats_url)
        js = nc.jetstream()
        for i in range(10):
            await js.publish(f"{prefix}.k", f"m{i}".encode())
        # The "dead bridge": pulls all ten on the durable, acks four, vanishes.
        dead = await raw(nats_url)
        pulled = await (await dead.jetstream().pull_subscribe_bind(durable, stream)).fetch(10)
        for message in pulled[:4]:
            await message.ack()
        await dead.flush()
        await dead.close()
        for i in range(10, 13):
            await js.publish(f"{prefix}.k", f"m{i}".encode())
        await nc.close()

        source = connector.source(*route)
        await source.connect()
        try:
            # Without the rewind m4..m9 would come back only after the 60 s ack_wait.
            received = await receive_n(source, 9, timeout=15)
            assert [m.envelope.payload for m in received] == [
                f"m{i}".encode() for i in range(4, 13)
            ]
            for message in received:
                message.ack(None)
        finally:
            await source.close()

    run(scenario())


# ---------------------------------------------------------------- JetStream source: streaming pull


def js_route(
    tmp_path: Path, nats_url: str, prefix: str, **route: Any
) -> tuple[Route, NatsConnection, BridgeSettings]:
    """A JetStream source route on subject `<prefix>.*`, stream and consumer created on connect."""
    js_source = {"stream": stream_name(prefix), "durable": f"d-{prefix}", "ack_wait": "60s"}
    return load_route(
        tmp_path,
        [nats_url],
        {"subject": f"{prefix}.*", "jetstream": js_source},
        {"subject": "o"},
        **route,
    )


async def publish_js(url: str, subject: str, count: int, first: int = 0) -> None:
    nc = await raw(url)
    js = nc.jetstream()
    for i in range(first, first + count):
        await js.publish(subject, f"m{i}".encode())
    await nc.close()


async def consumer_state(url: str, prefix: str) -> tuple[int, int]:
    """(num_ack_pending, num_waiting) of the test consumer: pulled-not-acked, live pull requests."""
    nc = await raw(url)
    info = await nc.jetstream().consumer_info(stream_name(prefix), f"d-{prefix}")
    await nc.close()
    return info.num_ack_pending, info.num_waiting or 0


def test_pulls_no_further_ahead_than_max_in_flight(nats_url: str, tmp_path: Path) -> None:
    """Backpressure: the source never has more than max_in_flight messages pulled and untaken."""

    async def scenario() -> None:
        prefix = unique("ahead")
        source = connector.source(*js_route(tmp_path, nats_url, prefix, max_in_flight=20))
        await source.connect()
        try:
            await publish_js(nats_url, f"{prefix}.k", 100)
            await asyncio.sleep(0.5)  # nothing taken: the source may hold 20, no more
            assert (await consumer_state(nats_url, prefix))[0] == 20
            received: list[Any] = []
            while len(received) < 100:
                batch = await source.receive(7, 2.0)
                assert batch, f"stalled after {len(received)}"
                received.extend(batch)
                for message in batch:
                    message.ack(None)
            assert [m.envelope.payload for m in received] == [f"m{i}".encode() for i in range(100)]
            assert [m.envelope.origin.stream_seq for m in received] == list(range(1, 101))
            await receive_nothing(source, 0.5)
        finally:
            await source.close()

    run(scenario())


def test_expired_pull_requests_give_back_their_credit(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that expire (408) are made again: as many waiting, messages still flow."""
    from natsbridge.connectors.nats import source as source_module

    monkeypatch.setattr(source_module, "DEFAULT_PULL_EXPIRES_S", 0.6)
    monkeypatch.setattr(source_module, "DEFAULT_PULL_HEARTBEAT_S", 0.2)

    async def scenario() -> None:
        prefix = unique("expire")
        source = connector.source(*js_route(tmp_path, nats_url, prefix, max_in_flight=40))
        await source.connect()
        try:
            await publish_js(nats_url, f"{prefix}.k", 15)
            first = await receive_n(source, 15)
            for message in first:
                message.ack(None)
            for _ in range(4):  # several expiry periods while idle
                await receive_nothing(source, 0.5)
            assert (await consumer_state(nats_url, prefix))[1] == 4  # 40 credit, 10 a request
            await publish_js(nats_url, f"{prefix}.k", 45, first=15)
            again = await receive_n(source, 45, timeout=5)
            assert [m.envelope.payload for m in again] == [f"m{i}".encode() for i in range(15, 60)]
        finally:
            await source.close()

    run(scenario())


def test_close_gives_back_what_was_pulled_but_not_taken(nats_url: str, tmp_path: Path) -> None:
    """Messages pulled ahead are nak'd on close: they come back at once, not after ack_wait.

    The second source binds without `create`, so there is no rewind (which would restore
    stream order): without the naks the 25 would come back only after the 60 s ack_wait.
    """

    async def scenario() -> None:
        prefix = unique("giveback")
        first = connector.source(*js_route(tmp_path, nats_url, prefix, max_in_flight=50))
        await first.connect()
        await publish_js(nats_url, f"{prefix}.k", 30)
        taken = await receive_n(first, 5)
        for message in taken:
            message.ack(None)
        await first.close()
        js_source = {"stream": stream_name(prefix), "durable": f"d-{prefix}", "create": False}
        bound = load_route(
            tmp_path,
            [nats_url],
            {"subject": f"{prefix}.*", "jetstream": js_source},
            {"subject": "o"},
        )
        second = connector.source(*bound)
        await second.connect()
        try:
            rest = await receive_n(second, 25, timeout=5)
            payloads = sorted(m.envelope.payload for m in rest)
            assert payloads == sorted(f"m{i}".encode() for i in range(5, 30))
            for message in rest:
                message.ack(None)
        finally:
            await second.close()

    run(scenario())


def test_deleted_consumer_is_connection_lost_and_reconnect_recreates_it(
    nats_url: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        prefix = unique("deleted")
        source = connector.source(*js_route(tmp_path, nats_url, prefix))
        await source.connect()
        try:
            nc = await raw(nats_url)
            await nc.jetstream().delete_consumer(stream_name(prefix), f"d-{prefix}")
            await nc.close()
            with pytest.raises(ConnectionLost, match="Consumer Deleted"):
                for _ in range(5):
                    await source.receive(10, 1.0)
            await source.connect()  # what the runtime does next
            await publish_js(nats_url, f"{prefix}.k", 3)
            received = await receive_n(source, 3)
            assert [m.envelope.payload for m in received] == [b"m0", b"m1", b"m2"]
        finally:
            await source.close()

    run(scenario())


def test_full_stream_with_discard_new_is_retryable(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("full")
        stream = stream_name(address)
        nc = await raw(nats_url)
        await nc.jetstream().add_stream(name=stream, subjects=[address], max_msgs=1, discard="new")
        await nc.close()
        route, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "in"},
            {"subject": address, "jetstream": {"stream": stream, "create": False}},
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        try:
            await send_one(sink, Envelope(subject=address, payload=b"fits"))
            with pytest.raises(RetryableError, match="err_code"):
                await send_one(sink, Envelope(subject=address, payload=b"no room"))
        finally:
            await sink.close()

    run(scenario())


def test_payload_too_large(nats_url: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        address = unique("big")
        limited, conn, bridge = load_route(
            tmp_path,
            [nats_url],
            {"subject": "in"},
            {"subject": address, "jetstream": {"stream": stream_name(address)}},
            max_payload="1KiB",
        )
        unlimited, _, _ = load_route(tmp_path, [nats_url], {"subject": "in"}, {"subject": address})
        js_sink = connector.sink(limited, conn, bridge)
        core_sink = connector.sink(unlimited, conn, bridge)
        await js_sink.connect()
        await core_sink.connect()
        try:
            await send_one(js_sink, Envelope(subject=address, payload=b"x" * 900))
            with pytest.raises(PayloadTooLarge) as too_large:
                await send_one(js_sink, Envelope(subject=address, payload=b"x" * 1025))
            assert too_large.value.limit == 1024
            with pytest.raises(PayloadTooLarge):  # headers count too
                await send_one(
                    js_sink,
                    Envelope(subject=address, payload=b"x" * 1000, headers={"H": ["v" * 100]}),
                )
            # The shared server announces max_payload 1 MiB: one byte more is refused here,
            # before nats-server would close the connection over it.
            with pytest.raises(PayloadTooLarge):
                await send_one(
                    core_sink, Envelope(subject=address, payload=b"x" * (1024 * 1024 + 1))
                )
            await send_one(core_sink, Envelope(subject=address, payload=b"still fine"))
        finally:
            await js_sink.close()
            await core_sink.close()

    run(scenario())


# ---------------------------------------------------------------- a private nats-server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nats_server_binary() -> str:
    candidates = [
        os.environ.get("NATSBRIDGE_NATS_SERVER_BIN", ""),
        shutil.which("nats-server") or "",
        str(
            Path(os.environ.get("NATSBRIDGE_CACHE_DIR", Path.home() / ".cache/natsbridge"))
            / "bin/nats-server"
        ),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = "no nats-server binary (run deploy/dev/services.sh up)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class PrivateServer:
    """A nats-server on its own loopback port and store dir, restartable with its data."""

    def __init__(self, directory: Path, config: str) -> None:
        self.binary = _nats_server_binary()
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.conf = directory / "nats.conf"
        store = directory / "js"
        self.conf.write_text(
            f'listen: 127.0.0.1:{self.port}\njetstream {{ store_dir: "{store}" }}\n' + config
        )
        self.log = directory / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf), "-l", str(self.log)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not start; see {self.log}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path, "")
    server.start()
    yield server
    server.stop()


def test_auth_token_and_user_password(tmp_path: Path) -> None:
    token_dir, users_dir = tmp_path / "token", tmp_path / "users"
    token_dir.mkdir()
    users_dir.mkdir()
    token_server = PrivateServer(token_dir, "authorization { token: s3cret-token }\n")
    users_server = PrivateServer(
        users_dir, 'authorization { users: [ {user: bridge, password: "pa55"} ] }\n'
    )
    token_server.start()
    users_server.start()

    async def attempt(server: PrivateServer, connection: dict[str, Any]) -> None:
        route, conn, bridge = load_route(
            tmp_path, [server.url], {"subject": "in"}, {"subject": "out"}, connection=connection
        )
        sink = connector.sink(route, conn, bridge)
        try:
            await sink.connect()
            await send_one(sink, Envelope(subject="out", payload=b"authenticated"))
        finally:
            await sink.close()

    async def scenario() -> None:
        await attempt(token_server, {"token": "s3cret-token"})
        await attempt(users_server, {"user": "bridge", "password": "pa55"})
        for server, wrong in (
            (token_server, {"token": "wrong"}),
            (users_server, {"user": "bridge", "password": "wrong"}),
            (users_server, {}),
        ):
            with pytest.raises(PermanentError) as refused:
                await attempt(server, wrong)
            assert "wrong" not in str(refused.value)  # secrets never in errors

    try:
        run(scenario())
    finally:
        token_server.stop()
        users_server.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(directory: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=natsbridge-test-ca", cwd=directory)  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(ext + "\n")
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip


def test_mutual_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    certs = tmp_path / "certs"
    certs.mkdir()
    _make_certs(certs)
    server = PrivateServer(
        tmp_path,
        "tls {\n"
        f'  cert_file: "{certs / "server.pem"}"\n'
        f'  key_file: "{certs / "server.key"}"\n'
        f'  ca_file: "{certs / "ca.pem"}"\n'
        "  verify: true\n"
        "}\n",
    )
    server.start()
    tls_url = f"tls://127.0.0.1:{server.port}"

    async def attempt(tls: dict[str, Any]) -> None:
        route, conn, bridge = load_route(
            tmp_path, [tls_url], {"subject": "in"}, {"subject": "out"}, connection={"tls": tls}
        )
        sink = connector.sink(route, conn, bridge)
        try:
            await sink.connect()
            await send_one(sink, Envelope(subject="out", payload=b"over mTLS"))
        finally:
            await sink.close()

    async def scenario() -> None:
        ca = str(certs / "ca.pem")
        await attempt(
            {
                "ca_file": ca,
                "cert_file": str(certs / "client.pem"),
                "key_file": str(certs / "client.key"),
            }
        )
        with pytest.raises((PermanentError, RetryableError)):  # no client certificate
            await attempt({"ca_file": ca})

    try:
        run(scenario())
    finally:
        server.stop()


def test_nkey_auth_without_the_nkeys_package_says_what_to_install(tmp_path: Path) -> None:
    try:
        import nkeys  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the nkeys package is installed")
    seed = tmp_path / "user.nk"
    seed.write_text("SUAEXAMPLE")
    route, conn, bridge = load_route(
        tmp_path,
        ["nats://127.0.0.1:1"],
        {"subject": "in"},
        {"subject": "out"},
        connection={"nkey_seed_file": str(seed)},
    )
    with pytest.raises(PermanentError, match="nkeys"):
        run(connector.sink(route, conn, bridge).connect())


def test_stream_subjects_cannot_be_derived_from_a_bare_placeholder(
    nats_url: str, tmp_path: Path
) -> None:
    route, conn, bridge = load_route(
        tmp_path,
        [nats_url],
        {"subject": "anything.>"},
        {"subject": "{{subject}}", "jetstream": {"stream": stream_name(unique("bare"))}},
    )
    with pytest.raises(PermanentError, match=r"to\.jetstream\.subjects"):
        run(connector.sink(route, conn, bridge).connect())


def test_jetstream_source_resumes_after_server_restart(
    private_server: PrivateServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        address = unique("restart")
        route, conn, bridge = load_route(
            tmp_path,
            [private_server.url],
            {"subject": address, "jetstream": {"stream": "RESTART", "ack_wait": "2s"}},
            {"subject": "out"},
        )
        source = connector.source(route, conn, bridge)
        await source.connect()
        try:
            nc = await raw(private_server.url)
            js = nc.jetstream()
            for i in range(10):
                await js.publish(address, f"before-{i}".encode())
            await nc.close()
            received = await receive_n(source, 10)
            for message in received[:3]:
                message.ack(None)
            await asyncio.sleep(0.3)  # let the three acks reach the server
            private_server.stop()
            assert await source.receive(10, 0.5) == []  # disconnected: nothing, no error
            private_server.start()
            nc = await raw(private_server.url)
            js = nc.jetstream()
            for i in range(5):
                await js.publish(address, f"after-{i}".encode())
            await nc.close()
            # The seven unacked come back (after ack_wait), the five new ones arrive.
            again = await receive_n(source, 12, timeout=30)
            payloads = sorted(m.envelope.payload for m in again)
            expected = [f"before-{i}".encode() for i in range(3, 10)]
            expected += [f"after-{i}".encode() for i in range(5)]
            assert payloads == sorted(expected)
            for message in again:
                message.ack(None)
            await receive_nothing(source, 2.5)  # acked after the restart: settled for good
        finally:
            await source.close()

    run(scenario())


def test_jetstream_sink_never_loses_a_send_across_server_restart(
    private_server: PrivateServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import natsbridge.connectors.nats.client as client_module

    monkeypatch.setattr(client_module, "DEFAULT_READY_WAIT_S", 0.3)

    async def scenario() -> None:
        route, conn, bridge = load_route(
            tmp_path,
            [private_server.url],
            {"subject": "in"},
            {"subject": "outage.{{subject}}", "jetstream": {"stream": "OUTAGE"}},
            delivery="exactly_once",
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        failures: list[BaseException] = []

        async def send_until_confirmed(i: int) -> None:
            envelope = Envelope(subject=f"outage.m{i}", payload=str(i).encode(), msg_id=f"id-{i}")
            while True:
                try:
                    await send_one(sink, envelope)
                    return
                except RetryableError as exc:
                    failures.append(exc)
                    await asyncio.sleep(0.2)

        try:
            loop = asyncio.get_running_loop()
            sends = []
            for i in range(300):
                sends.append(asyncio.ensure_future(send_until_confirmed(i)))
                if i == 100:
                    await loop.run_in_executor(None, private_server.stop)
                if i == 200:
                    await asyncio.sleep(1.0)  # longer than the sink waits for a reconnect
                    await loop.run_in_executor(None, private_server.start)
                await asyncio.sleep(0.002)
            await asyncio.wait_for(asyncio.gather(*sends), 60)
            assert failures, "the outage should have been reported to some sends"
            assert all(isinstance(f, RetryableError) for f in failures)
            nc = await raw(private_server.url)
            info = await nc.jsm().stream_info("OUTAGE")
            await nc.close()
            assert info.state.messages == 300  # every send stored, each exactly once
        finally:
            await sink.close()

    run(scenario())


def test_core_sink_send_while_server_down_raises_connection_lost(
    private_server: PrivateServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import natsbridge.connectors.nats.client as client_module

    monkeypatch.setattr(client_module, "DEFAULT_READY_WAIT_S", 0.5)

    async def scenario() -> None:
        route, conn, bridge = load_route(
            tmp_path, [private_server.url], {"subject": "in"}, {"subject": "down"}
        )
        sink = connector.sink(route, conn, bridge)
        await sink.connect()
        try:
            await send_one(sink, Envelope(subject="down", payload=b"up"))
            private_server.stop()
            with pytest.raises(RetryableError):
                for _ in range(50):  # the client notices the closed socket within a few tries
                    await send_one(sink, Envelope(subject="down", payload=b"lost?"))
                    await asyncio.sleep(0.05)
            private_server.start()
            deadline = time.monotonic() + 15
            while True:
                try:
                    await send_one(sink, Envelope(subject="down", payload=b"back"))
                    break
                except RetryableError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
        finally:
            await sink.close()

    run(scenario())


# ---------------------------------------------------------------- bytes that are not UTF-8


async def _publish_raw(url: str, messages: Sequence[tuple[bytes, bytes | None, bytes]]) -> None:
    """Publish (subject, header block, payload) as written: nats-py checks what it sends."""
    nc = await raw(url)
    try:
        for subject, hdr, payload in messages:
            if hdr is None:
                line = b"PUB %s %d\r\n" % (subject, len(payload))
                await nc._send_command(line + payload + b"\r\n")
            else:
                line = b"HPUB %s %d %d\r\n" % (subject, len(hdr), len(hdr) + len(payload))
                await nc._send_command(line + hdr + payload + b"\r\n")
        await nc.flush(timeout=10)
    finally:
        await nc.close()


def test_core_source_reads_subjects_and_status_lines_that_are_not_utf8(
    nats_url: str, tmp_path: Path
) -> None:
    """nats-py decoded them strictly in its read loop: reconnect, and the message was lost."""

    async def scenario() -> None:
        address = unique("raw")
        route, conn, bridge = load_route(
            tmp_path, [nats_url], {"subject": f"{address}.>"}, {"subject": "o"}
        )
        source = connector.source(route, conn, bridge)
        await source.connect()
        link = source.link
        try:
            base = address.encode()
            await _publish_raw(
                nats_url,
                [
                    (base + b".\xff\xfe", None, b"one"),
                    (base + b".s", b"NATS/1.0 5\xff3 \xfe\r\nX-A: 1\r\n\r\n", b"two"),
                    (base + b".ok", None, b"three"),
                ],
            )
            received = await receive_n(source, 3)
            assert [m.envelope.payload for m in received] == [b"one", b"two", b"three"]
            first = received[0].envelope
            assert first.subject == f"{address}.\udcff\udcfe"
            assert first.subject.encode("utf-8", "surrogateescape") == base + b".\xff\xfe"
            assert received[1].envelope.headers == {"X-A": ["1"]}
            assert source.link is link and not link.closed  # no reconnect
        finally:
            await source.close()

    run(scenario())


def test_jetstream_source_reads_a_subject_that_is_not_utf8(nats_url: str, tmp_path: Path) -> None:
    """The pull handler decoded it strictly: every later message of the stream was stuck."""

    async def scenario() -> None:
        prefix = unique("rawjs")
        source = connector.source(*js_route(tmp_path, nats_url, prefix))
        await source.connect()
        try:
            base = prefix.encode()
            await _publish_raw(
                nats_url, [(base + b".\xff\xfe", None, b"one"), (base + b".ok", None, b"two")]
            )
            received = await receive_n(source, 2)
            assert [m.envelope.payload for m in received] == [b"one", b"two"]
            subject = received[0].envelope.subject
            assert subject.encode("utf-8", "surrogateescape") == base + b".\xff\xfe"
            assert [m.envelope.origin.stream_seq for m in received] == [1, 2]
            for message in received:
                message.ack(None)
            await receive_nothing(source, 0.5)
            assert (await consumer_state(nats_url, prefix))[0] == 0
        finally:
            await source.close()

    run(scenario())
