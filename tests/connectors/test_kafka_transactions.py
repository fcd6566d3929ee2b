"""The Kafka sink under exactly_once: one transaction per batch, fenced on restart.

The oracle reads with kafka-python and ``isolation_level="read_committed"``: it sees a
record only once its transaction committed, never one of an aborted transaction.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.connector import send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost, MessageRejected, RetryableError
from natsbridge.connectors.kafka import connector
from natsbridge.connectors.kafka.sink import KafkaTopicSink
from tests.connectors.helpers import run, unique
from tests.connectors.test_kafka import create_topic, load_route

pytestmark = pytest.mark.kafka


def transactional_sink(directory: Path, bootstrap: str, topic: str, bridge: str) -> KafkaTopicSink:
    """The sink the kind opens for an exactly_once route of bridge `bridge`."""
    route, connection = load_route(
        directory,
        bootstrap,
        {"connection": "nats", "subject": "in.>", "jetstream": {"stream": "S"}},
        {"connection": "kafka", "topic": topic},
        delivery="exactly_once",
        name="eos",
    )
    sink = connector.sink(route, connection, BridgeSettings(id=bridge))
    assert isinstance(sink, KafkaTopicSink)
    assert sink.transactional_id == f"{bridge}.eos"
    return sink


def read_committed(bootstrap: str, topic: str, settle: float = 3.0) -> list[Any]:
    """Every record of partition 0 a read_committed consumer sees, after `settle` s of quiet."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        records: list[Any] = []
        quiet_until = time.monotonic() + settle
        while time.monotonic() < quiet_until:
            for part in consumer.poll(timeout_ms=300).values():
                records.extend(part)
                quiet_until = time.monotonic() + settle
        return records
    finally:
        consumer.close(autocommit=False)


def batch(topic: str, *payloads: bytes, timestamp: float | None = None) -> list[Envelope]:
    """Envelopes as the runtime sends them under exactly_once (msg_id = the dedup id)."""
    stamp = time.time() if timestamp is None else timestamp
    return [
        Envelope(subject=topic, payload=p, timestamp=stamp, msg_id=f"id-{p.decode()}")
        for p in payloads
    ]


def test_each_batch_is_one_committed_transaction(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("eos")
        create_topic(kafka_bootstrap, topic)
        sink = transactional_sink(tmp_path, kafka_bootstrap, topic, unique("bridge"))
        await sink.connect()
        try:
            first = sink.send_batch(batch(topic, b"a1", b"a2", b"a3"))
            second = sink.send_batch(batch(topic, b"b1", b"b2"))
            assert await asyncio.gather(first, second) == [[None] * 3, [None] * 2]
            await send_one(sink, Envelope(subject=topic, payload=b"c1"))
        finally:
            await sink.close()
        records = await asyncio.to_thread(read_committed, kafka_bootstrap, topic)
        assert [r.value for r in records] == [b"a1", b"a2", b"a3", b"b1", b"b2", b"c1"]

    run(scenario())


def test_a_refused_record_aborts_its_window_and_the_window_queued_behind_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Nothing of an aborted window is visible; sent again as the runtime does, all land once.

    The broker refuses the whole produce batch for one record, so the window fails as a
    lost connection: the runtime then sends the oldest record alone, and the refused one
    is refused alone (dead-lettered with its reason).
    """

    async def scenario() -> None:
        topic = unique("eos-abort")
        create_topic(kafka_bootstrap, topic, **{"message.timestamp.after.max.ms": "0"})
        sink = transactional_sink(tmp_path, kafka_bootstrap, topic, unique("bridge"))
        await sink.connect()
        try:
            ahead = batch(topic, b"ahead", timestamp=time.time() + 30)
            window = [*batch(topic, b"x1"), *ahead, *batch(topic, b"x2")]
            behind = batch(topic, b"y1", b"y2")
            # `behind` is sent while `window` is outstanding: it must not commit before it.
            results = await asyncio.gather(sink.send_batch(window), sink.send_batch(behind))
            for failed in (*results[0], *results[1]):
                assert isinstance(failed, RetryableError), repr(failed)
            await sink.connect()  # the runtime reconnects after a ConnectionLost
            assert await sink.send_batch(batch(topic, b"x1")) == [None]
            with pytest.raises(MessageRejected, match="INVALID_TIMESTAMP"):
                await send_one(sink, ahead[0])
            # An aborted transaction spends the producer: the runtime reconnects then.
            with pytest.raises(ConnectionLost, match="new producer"):
                await send_one(sink, batch(topic, b"z")[0])
            await sink.connect()
            outcomes = await sink.send_batch(batch(topic, b"x2", b"y1", b"y2"))
            assert outcomes == [None] * 3
        finally:
            await sink.close()
        records = await asyncio.to_thread(read_committed, kafka_bootstrap, topic)
        assert [r.value for r in records] == [b"x1", b"x2", b"y1", b"y2"]

    run(scenario())


@pytest.mark.parametrize(
    ("settled", "again"),
    [
        (0, ["m1", "m2", "m3", "m4", "m5"]),  # killed before either window was settled
        (2, ["m3", "m4", "m5"]),  # the first window was settled, the second not
        (4, ["m5"]),  # both settled: nothing is skipped
    ],
)
def test_a_restarted_bridge_skips_what_was_committed_and_not_settled(
    kafka_bootstrap: str, tmp_path: Path, settled: int, again: list[str]
) -> None:
    """The buffer gives the unsettled windows again; the marker says they were committed."""

    async def scenario() -> None:
        topic = unique("eos-resume")
        create_topic(kafka_bootstrap, topic)
        bridge = unique("bridge")
        before = transactional_sink(tmp_path, kafka_bootstrap, topic, bridge)
        await before.connect()
        try:
            assert await before.send_batch(batch(topic, b"m1", b"m2")) == [None, None]
            assert await before.send_batch(batch(topic, b"m3", b"m4")) == [None, None]
        finally:
            await before.close()  # as if killed: the buffer settled `settled` of them
        after = transactional_sink(tmp_path, kafka_bootstrap, topic, bridge)
        await after.connect()
        try:
            payloads = [p.encode() for p in again]
            outcomes = await after.send_batch(batch(topic, *payloads))
            assert outcomes == [None] * len(again)
            assert await after.send_batch(batch(topic, b"m6")) == [None]
        finally:
            await after.close()
        records = await asyncio.to_thread(read_committed, kafka_bootstrap, topic)
        assert [r.value for r in records] == [f"m{i}".encode() for i in range(1, 7)]
        assert settled + len(again) == 5

    run(scenario())


def test_a_new_incarnation_fences_the_old_producer(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Same bridge id and route: init_transactions of the new one fences the old one."""

    async def scenario() -> None:
        topic = unique("eos-fence")
        create_topic(kafka_bootstrap, topic)
        bridge = unique("bridge")
        old = transactional_sink(tmp_path, kafka_bootstrap, topic, bridge)
        new = transactional_sink(tmp_path, kafka_bootstrap, topic, bridge)
        await old.connect()
        try:
            await send_one(old, Envelope(subject=topic, payload=b"old-1"))
            await new.connect()
            with pytest.raises(ConnectionLost):
                await send_one(old, Envelope(subject=topic, payload=b"zombie"))
            await send_one(new, Envelope(subject=topic, payload=b"new-1"))
        finally:
            await old.close()
            await new.close()
        records = await asyncio.to_thread(read_committed, kafka_bootstrap, topic)
        assert [r.value for r in records] == [b"old-1", b"new-1"]

    run(scenario())


def test_validate_says_what_exactly_once_into_kafka_needs(tmp_path: Path) -> None:
    """A remark, not a problem: the route loads, and the loader keeps what it needs."""
    route, _ = load_route(
        tmp_path,
        "127.0.0.1:9092",
        {"connection": "nats", "subject": "in.>", "jetstream": {"stream": "S"}},
        {"connection": "kafka", "topic": "t"},
        delivery="exactly_once",
    )
    [finding] = connector.check_sink(route.sink, route.spec)
    assert finding.warning and finding.path == ("delivery",)
    assert "transactions" in finding.message and "transaction.state.log" in finding.message
