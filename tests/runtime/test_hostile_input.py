"""Hostile messages through a whole bridge on the real brokers, counted: sent = delivered +
dead-lettered, the route and its neighbours keep flowing, the process stays up.

Each test runs `Bridge` in-process (admin off) over a fresh data dir, publishes with the
brokers' raw clients, waits until the route has settled every message and then reads
what arrived in JetStream and what sits in the route's dead-letter stream.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from nats.js.api import StreamConfig

from natsbridge.bridge.broker.broker import Broker
from natsbridge.bridge.config import load_config
from natsbridge.bridge.runtime.bridge import Bridge
from natsbridge.bridge.runtime.embedded import dead_letter_stream

WAIT_S = 60.0


@dataclass
class Outcome:
    """What one bridge run did: its routes' counters, the stream and the dead letters."""

    counters: dict[str, dict[str, Any]]
    stored: list[Any]  # JetStream messages of the checked stream, in order
    dead: list[Any]  # dead letters of the checked route


def run_bridge(
    tmp_path: Path,
    nats_url: str,
    config: str,
    produce: Callable[[], None],
    expect: dict[str, int],
    stream: str,
    route: str,
) -> Outcome:
    """Run `config` until every route in `expect` settled that many messages."""
    path = tmp_path / "bridge.yaml"
    path.write_text(config)
    loaded = load_config(path, {**os.environ, "NATSBRIDGE_DATA_DIR": str(tmp_path / "data")})
    bridge = Bridge(loaded)

    async def scenario() -> Outcome:
        running = asyncio.create_task(bridge.run())
        try:
            await _wait(lambda: len(bridge.runners) == len(loaded.routes), running)
            await _wait(lambda: all(r.stats.source_connected for r in bridge.runners), running)
            await asyncio.to_thread(produce)
            await _wait(lambda: _settled(bridge, expect), running)
        finally:
            bridge.stop()
            await asyncio.wait_for(running, WAIT_S)
        counters = {
            r.route.name: {
                "received": r.stats.received,
                "delivered": r.stats.delivered,
                "dead_lettered": dict(r.stats.dead_lettered),
            }
            for r in bridge.runners
        }
        broker = await Broker.open(tmp_path / "data")
        try:
            dead = await broker.messages(dead_letter_stream(route))
        finally:
            await broker.close()
        return Outcome(counters, await stream_messages(nats_url, stream), dead)

    return asyncio.run(scenario())


def _settled(bridge: Bridge, expect: dict[str, int]) -> bool:
    for runner in bridge.runners:
        stats = runner.stats
        count = expect.get(runner.route.name)
        if count is not None and (
            stats.received != count or stats.delivered + sum(stats.dead_lettered.values()) != count
        ):
            return False
    return True


async def _wait(check: Callable[[], bool], running: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not check():
        if running.done():
            running.result()  # raises what stopped the bridge
            raise AssertionError("the bridge stopped by itself")
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def stream_messages(nats_url: str, stream: str) -> list[Any]:
    """Every message stored in JetStream `stream`, in order (empty if it does not exist)."""
    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        try:
            info = await jsm.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        first, last = info.state.first_seq, info.state.last_seq
        out = []
        for seq in range(first, last + 1):
            try:
                out.append(await jsm.get_msg(stream, seq))
            except nats.js.errors.NotFoundError:
                continue
        return out
    finally:
        await nc.close()


def amqp_config(amqp_url: str, nats_url: str, name: str, delivery: str = "at_least_once") -> str:
    """Two routes from two exchanges into two streams: `name` and `name`-other."""
    routes = "".join(
        f"""
  - name: {route}
    from: {{connection: rabbit, exchange: {route}, binding_keys: ["#"]}}
    to:
      connection: nats
      subject: "{route}.{{{{routing_key}}}}"
      jetstream: {{stream: {route}}}
    delivery: {delivery}
"""
        for route in (name, f"{name}-other")
    )
    return f"""
version: 1
bridge: {{id: hostile, data_dir: "${{env:NATSBRIDGE_DATA_DIR}}", admin: {{enabled: false}}}}
connections:
  rabbit: {{kind: amqp, url: "{amqp_url}"}}
  nats: {{kind: nats, servers: ["{nats_url}"]}}
routes:{routes}"""


def amqp_publish(amqp_url: str, exchange: str, messages: list[tuple[Any, bytes, Any]]) -> None:
    """Publish (routing key, body, properties) with pika, confirmed, to a topic exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare(exchange, "topic", durable=True)
        for key, body, properties in messages:
            channel.basic_publish(exchange, key, body, properties)
    finally:
        connection.close()


def persistent(**props: Any) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, **props)


@pytest.mark.amqp
@pytest.mark.nats
def test_case_1_a_non_utf8_routing_key_is_delivered_and_no_route_stops(
    tmp_path: Path, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    name = f"rk-{unique_name[-10:]}"
    other = f"{name}-other"

    def produce() -> None:
        amqp_publish(
            amqp_url,
            name,
            [
                ("a.before", b"before", persistent()),
                (b"\xff\xfe.x", b"hostile", persistent()),  # pika sends bytes as they are
                ("a.after", b"after", persistent()),
            ],
        )
        amqp_publish(amqp_url, other, [("b", b"other", persistent())])

    outcome = run_bridge(
        tmp_path,
        nats_url,
        amqp_config(amqp_url, nats_url, name),
        produce,
        {name: 3, other: 1},
        name,
        name,
    )
    assert [m.data for m in outcome.stored] == [b"before", b"hostile", b"after"]
    hostile = outcome.stored[1]
    # The key's bytes, read with surrogateescape, escaped reversibly into the subject.
    assert hostile.subject == f"{name}.%ED%B3%BF%ED%B3%BE.x"
    assert hostile.headers["Amqp-Routing-Key"] == "base64:" + base64.b64encode(
        b"\xff\xfe.x"
    ).decode("ascii")
    assert outcome.counters[other]["delivered"] == 1
    assert outcome.dead == []


@pytest.mark.amqp
@pytest.mark.nats
def test_case_5_a_non_utf8_header_table_key_is_carried_not_rejected(
    tmp_path: Path, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    name = f"tk-{unique_name[-10:]}"

    def produce() -> None:
        amqp_publish(
            amqp_url,
            name,
            [
                ("k", b"before", persistent()),
                ("k", b"hostile", persistent(headers={b"\xffkey": "v", "X-Ok": "1"})),
                ("k", b"after", persistent()),
            ],
        )

    outcome = run_bridge(
        tmp_path, nats_url, amqp_config(amqp_url, nats_url, name), produce, {name: 3}, name, name
    )
    assert [m.data for m in outcome.stored] == [b"before", b"hostile", b"after"]
    assert outcome.stored[1].headers["%ED%B3%BFkey"] == "v"
    assert outcome.stored[1].headers["X-Ok"] == "1"
    assert outcome.dead == []


@pytest.mark.amqp
@pytest.mark.nats
def test_case_2_at_least_once_never_drops_messages_that_share_a_message_id(
    tmp_path: Path, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    name = f"id-{unique_name[-10:]}"
    messages = [
        ("o", f"m{i}".encode(), persistent(message_id="order-42" if i % 3 == 0 else f"id-{i}"))
        for i in range(15)
    ]
    outcome = run_bridge(
        tmp_path,
        nats_url,
        amqp_config(amqp_url, nats_url, name),
        lambda: amqp_publish(amqp_url, name, messages),
        {name: 15},
        name,
        name,
    )
    assert [m.data for m in outcome.stored] == [f"m{i}".encode() for i in range(15)]
    assert all("Nats-Msg-Id" not in (m.headers or {}) for m in outcome.stored)
    assert outcome.counters[name]["delivered"] == 15


@pytest.mark.amqp
@pytest.mark.nats
def test_case_4_a_message_id_with_crlf_cannot_inject_a_header(
    tmp_path: Path, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    name = f"cr-{unique_name[-10:]}"
    hostile = "id\r\nNats-Expected-Stream: OTHER"
    messages = [
        ("k", b"before", persistent(message_id="id-1")),
        ("k", b"hostile", persistent(message_id=hostile)),
        ("k", b"after", persistent(message_id="id-3")),
    ]
    outcome = run_bridge(
        tmp_path,
        nats_url,
        amqp_config(amqp_url, nats_url, name, delivery="exactly_once"),
        lambda: amqp_publish(amqp_url, name, messages),
        {name: 3},
        name,
        name,
    )
    assert [m.data for m in outcome.stored] == [b"before", b"hostile", b"after"]
    stored = outcome.stored[1].headers
    assert stored["Nats-Msg-Id"] == "base64:" + base64.b64encode(hostile.encode()).decode()
    assert "OTHER" not in repr(stored)
    assert outcome.stored[0].headers["Nats-Msg-Id"] == "id-1"


@pytest.mark.amqp
@pytest.mark.nats
def test_case_3_amqp_directive_headers_are_renamed_not_obeyed(
    tmp_path: Path, amqp_url: str, nats_url: str, unique_name: str
) -> None:
    name = f"dh-{unique_name[-10:]}"
    directives = {
        "Nats-Msg-Id": "same",
        "Nats-Expected-Last-Sequence": "999",
        "Bridge-Buffer-Key": "k",
        "Bridge-Origin": "other-bridge/x",
    }
    messages = [("k", f"m{i}".encode(), persistent(headers=directives)) for i in range(4)]
    outcome = run_bridge(
        tmp_path,
        nats_url,
        amqp_config(amqp_url, nats_url, name),
        lambda: amqp_publish(amqp_url, name, messages),
        {name: 4},
        name,
        name,
    )
    assert [m.data for m in outcome.stored] == [f"m{i}".encode() for i in range(4)]
    headers = outcome.stored[0].headers
    assert headers["%4Eats-Msg-Id"] == "same"
    assert headers["%4Eats-Expected-Last-Sequence"] == "999"
    assert headers["%42ridge-Buffer-Key"] == "k"
    # Loop prevention across bridges relies on Bridge-Origin: kept, this hop appended.
    assert "%42ridge-Origin" not in headers and headers["Bridge-Origin"] == "hostile/rabbit"


@pytest.mark.kafka
@pytest.mark.nats
def test_case_3_a_kafka_rollup_header_purges_nothing(
    tmp_path: Path, kafka_bootstrap: str, nats_url: str, unique_name: str
) -> None:
    name = f"ru-{unique_name[-10:]}"

    async def rollup_stream() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jsm().add_stream(
                StreamConfig(name=name, subjects=[f"{name}.>"], allow_rollup_hdrs=True)
            )
        finally:
            await nc.close()

    asyncio.run(rollup_stream())
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for i in range(6):
                producer.send(name, f"m{i}".encode())
            producer.send(name, b"rollup", headers=[("Nats-Rollup", b"all")])
            producer.flush()
        finally:
            producer.close()

    config = f"""
version: 1
bridge: {{id: hostile, data_dir: "${{env:NATSBRIDGE_DATA_DIR}}", admin: {{enabled: false}}}}
connections:
  kafka: {{kind: kafka, bootstrap_servers: ["{kafka_bootstrap}"]}}
  nats: {{kind: nats, servers: ["{nats_url}"]}}
routes:
  - name: {name}
    from: {{connection: kafka, topics: [{name}]}}
    to: {{connection: nats, subject: "{name}.m", jetstream: {{stream: {name}}}}}
"""
    outcome = run_bridge(tmp_path, nats_url, config, produce, {name: 7}, name, name)
    assert [m.data for m in outcome.stored] == [*(f"m{i}".encode() for i in range(6)), b"rollup"]
    assert outcome.stored[-1].headers["%4Eats-Rollup"] == "all"
    assert outcome.dead == []
