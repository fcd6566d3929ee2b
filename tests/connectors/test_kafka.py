"""The Kafka connector against the real Kafka 4.x broker of the harness (services.sh).

Topics are fresh per test (created with the admin client: sources never create topics).
Consumers use short session and heartbeat times so that group rebalances take a second
or two instead of Kafka's defaults.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from natsbridge.bridge.config import load_config
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import Incoming, Source, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    ConfigError,
    ConnectionLost,
    HeaderError,
    MessageRejected,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
)
from natsbridge.connectors.kafka import connector
from natsbridge.connectors.kafka.config import OWNED_PROPERTIES, KafkaConnection
from natsbridge.connectors.kafka.errors import KafkaAuthenticationFailed, TopicMissing
from natsbridge.connectors.kafka.sink import KafkaTopicSink
from natsbridge.connectors.kafka.source import KafkaTopicSource
from natsbridge.mappings.headers import KAFKA_KEY, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC
from tests.conftest import KafkaScram, Services
from tests.connectors.helpers import (
    receive_n,
    run,
    unique,
)

pytestmark = pytest.mark.kafka

FAST_GROUP = {
    "session.timeout.ms": 6000,  # the broker's group.min.session.timeout.ms
    "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 10000,
}


# ---------------------------------------------------------------- helpers


def load_route(
    directory: Path,
    bootstrap: str,
    source: dict[str, Any],
    sink: dict[str, Any],
    kafka: dict[str, Any] | None = None,
    **route: Any,
) -> tuple[Route, KafkaConnection]:
    """Write a one-route config (kafka on one side, nats on the other) and load it."""
    name = route.pop("name", unique("r"))
    conn = {"kind": "kafka", "bootstrap_servers": [bootstrap], **(kafka or {})}
    body = {"name": name, "from": source, "to": sink, **route}
    path = directory / f"{name}.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: test-bridge}\n"
        "connections:\n"
        f"  kafka: {json.dumps(conn)}\n"
        '  nats: {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}\n'
        f"routes:\n  - {json.dumps(body)}\n"
    )
    config = load_config(path)
    [loaded] = config.routes
    connection = config.connections["kafka"]
    assert isinstance(connection, KafkaConnection)
    return loaded, connection


def source_for(
    directory: Path,
    bootstrap: str,
    group: str,
    kafka: dict[str, Any] | None = None,
    max_in_flight: int = 1000,
    **source: Any,
) -> KafkaTopicSource:
    route, connection = load_route(
        directory,
        bootstrap,
        {"connection": "kafka", "group_id": group, **source},
        {"connection": "nats", "subject": "kafka.{{topic}}"},
        kafka,
        max_in_flight=max_in_flight,
    )
    return KafkaTopicSource(route, connection, "kafka", overrides=FAST_GROUP)


def sink_for(
    directory: Path, bootstrap: str, kafka: dict[str, Any] | None = None, **sink: Any
) -> KafkaTopicSink:
    route, connection = load_route(
        directory,
        bootstrap,
        {"connection": "nats", "subject": "in.*"},
        {"connection": "kafka", **sink},
        kafka,
    )
    return KafkaTopicSink(route, connection, "kafka")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, **configs: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
        if configs:
            spec["configs"] = configs
        admin.create_topics({topic: spec}, wait_for_metadata=True)
    finally:
        admin.close()


def topic_partitions(bootstrap: str, topic: str) -> int | None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    if described["error_code"] == 3:
        return None
    return len(described["partitions"])


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    """The group's committed offset of each partition of `topic`."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        consumer.close(autocommit=False)


def produce_raw(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
    partition: int | None = None,
) -> None:
    """Produce (key, value, headers) records with kafka-python itself, in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value, headers in records:
            producer.send(topic, value=value, key=key, headers=headers, partition=partition)
        producer.flush()
    finally:
        producer.close()


def consume_raw(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:
    """The first `count` records of every partition of `topic` (in order per partition)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count:
            assert time.monotonic() < deadline, f"read {len(records)} of {count} records"
            for part in consumer.poll(timeout_ms=500).values():
                records.extend(part)
        return records
    finally:
        consumer.close(autocommit=False)


def ack_all(messages: Sequence[Incoming]) -> None:
    for message in messages:
        message.ack(None)


async def eventually(check: Any, timeout: float = 15.0) -> None:
    """Wait until `check()` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- source


def test_connector_builds_both_sides(kafka_bootstrap: str, tmp_path: Path) -> None:
    route, connection = load_route(
        tmp_path,
        kafka_bootstrap,
        {"connection": "kafka", "topics": ["a"]},
        {"connection": "nats", "subject": "x"},
    )
    from natsbridge.bridge.config.model import BridgeSettings

    source = connector.source(route, connection, BridgeSettings(id="b"))
    assert isinstance(source, KafkaTopicSource) and isinstance(source, Source)
    assert source.group_id == f"natsbridge-{route.name}"


def test_commit_watermark_advances_over_the_contiguous_prefix_only(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        topic = unique("watermark")
        group = f"g-{topic}"
        create_topic(kafka_bootstrap, topic, partitions=2)
        for partition in (0, 1):
            records = [(None, f"p{partition}-{i}".encode(), []) for i in range(10)]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, topic, records, partition)
        source = source_for(tmp_path, kafka_bootstrap, group, topics=[topic])
        await source.connect()
        try:
            received = await receive_n(source, 20)
            by = {(m.envelope.origin.partition, m.envelope.origin.offset): m for m in received}  # type: ignore[union-attr]
            # partition 0: everything but offsets 3 and 4, out of order
            for offset in (9, 7, 0, 2, 1, 8, 5, 6):
                by[(0, offset)].ack(None)
            # partition 1: all of it
            for offset in reversed(range(10)):
                by[(1, offset)].ack(None)

            def check(expected: list[int | None]) -> bool:
                return committed(kafka_bootstrap, group, topic, 2) == expected

            await eventually(lambda: check([3, 10]))
            await asyncio.sleep(0.5)
            assert check([3, 10]), "the watermark went past an unsettled record"
            by[(0, 4)].ack(None)
            await asyncio.sleep(0.5)
            assert check([3, 10])
            by[(0, 3)].ack(None)
            await eventually(lambda: check([10, 10]))
        finally:
            await source.close()

    run(scenario())


def test_keys_and_repeated_headers_round_trip(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic_in, topic_out = unique("keys-in"), unique("keys-out")
        create_topic(kafka_bootstrap, topic_in)
        headers = [("a", b"1"), ("b", b"two"), ("a", b"3"), ("bin", b"\xff\x00"), ("sp ace", b"")]
        records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
            (b"\xff\xfe-not-utf8", b"binary key", headers),
            ("clé".encode(), b"utf-8 key", [("x", b"y")]),
            (None, b"no key", []),
        ]
        await asyncio.to_thread(produce_raw, kafka_bootstrap, topic_in, records)
        source = source_for(tmp_path, kafka_bootstrap, f"g-{topic_in}", topics=[topic_in])
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic_out, create_topic={"partitions": 1})
        await source.connect()
        await sink.connect()
        try:
            received = await receive_n(source, 3)
            first = received[0].envelope
            assert first.key == b"\xff\xfe-not-utf8"
            assert first.headers["a"] == ["1", "3"]
            assert first.headers["bin"] == ["base64:/wA="]
            assert first.header(KAFKA_KEY) == "base64://4tbm90LXV0Zjg="
            assert first.header(KAFKA_TOPIC) == topic_in
            assert first.header(KAFKA_PARTITION) == "0"
            assert first.header(KAFKA_OFFSET) == "0"
            assert received[1].envelope.key == "clé".encode()
            assert received[1].envelope.header(KAFKA_KEY) == "clé"
            assert received[2].envelope.key is None
            assert KAFKA_KEY not in received[2].envelope.headers
            for message in received:
                message.envelope.subject = topic_out
                await send_one(sink, message.envelope)
                message.ack(None)
            out = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic_out, 3)
            assert [r.key for r in out] == [r[0] for r in records]
            assert [r.value for r in out] == [r[1] for r in records]
            coordinates = [KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET, KAFKA_KEY]
            assert out[0].headers[: len(headers)] == headers  # order and repeats kept
            assert [name for name, _ in out[0].headers[len(headers) :]] == coordinates
            assert out[0].timestamp == received[0].envelope.timestamp * 1000
        finally:
            await source.close()
            await sink.close()

    run(scenario())


def test_topic_pattern(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        prefix = f"pat{uuid.uuid4().hex[:8]}"
        for suffix in ("a", "b"):
            create_topic(kafka_bootstrap, f"{prefix}.{suffix}")
            records = [(None, f"{suffix}-{i}".encode(), []) for i in range(5)]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, f"{prefix}.{suffix}", records)
        source = source_for(
            tmp_path, kafka_bootstrap, f"g-{prefix}", topic_pattern=rf"^{prefix}\..*"
        )
        await source.connect()
        try:
            received = await receive_n(source, 10)
            assert {m.envelope.subject for m in received} == {f"{prefix}.a", f"{prefix}.b"}
            ack_all(received)
        finally:
            await source.close()

    run(scenario())


def test_backpressure_pauses_above_max_in_flight(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("flow")
        create_topic(kafka_bootstrap, topic)
        records = [(None, f"m{i}".encode(), []) for i in range(1000)]
        await asyncio.to_thread(produce_raw, kafka_bootstrap, topic, records)
        source = source_for(
            tmp_path, kafka_bootstrap, f"g-{topic}", max_in_flight=50, topics=[topic]
        )
        await source.connect()
        try:
            held = await receive_n(source, 50)
            await asyncio.sleep(1.5)
            held.extend(await source.receive(1000, 0.1))
            assert len(held) <= 2 * 50, f"{len(held)} records unsettled with max_in_flight 50"
            session = source._session
            assert session is not None and session.paused
            payloads = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while len(payloads) < 1000:
                assert loop.time() < deadline, f"received {len(payloads)} of 1000"
                payloads.extend(m.envelope.payload for m in held)
                ack_all(held)
                held = list(await source.receive(1000, 0.2))
                assert session.unsettled <= 2 * 50
            assert payloads == [r[1] for r in records]
        finally:
            await source.close()

    run(scenario())


def test_two_sources_share_a_group_and_the_survivor_takes_over(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        topic = unique("shared")
        group = f"g-{topic}"
        create_topic(kafka_bootstrap, topic, partitions=6)
        first = source_for(tmp_path, kafka_bootstrap, group, topics=[topic])
        second = source_for(tmp_path, kafka_bootstrap, group, topics=[topic])
        await first.connect()
        await second.connect()

        def assigned(source: KafkaTopicSource) -> int:
            session = source._session
            return len(session.partitions) if session is not None else 0

        try:
            await eventually(lambda: assigned(first) + assigned(second) == 6 and assigned(second))
            assert assigned(first) == 3 and assigned(second) == 3
            batch = [(f"k{i}".encode(), f"one-{i}".encode(), []) for i in range(600)]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, topic, batch)
            seen: dict[str, set[bytes]] = {"first": set(), "second": set()}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while len(seen["first"] | seen["second"]) < 600:
                assert loop.time() < deadline, "not everything was read"
                for name, source in (("first", first), ("second", second)):
                    got = await source.receive(600, 0.2)
                    seen[name].update(m.envelope.payload for m in got)
                    ack_all(got)
            assert seen["first"] and seen["second"], "both members read a share"
            await first.close()  # leaves the group: the second gets all six partitions
            await eventually(lambda: assigned(second) == 6)
            batch = [(f"k{i}".encode(), f"two-{i}".encode(), []) for i in range(600)]
            await asyncio.to_thread(produce_raw, kafka_bootstrap, topic, batch)
            after: set[bytes] = set()
            deadline = loop.time() + 30
            while not {r[1] for r in batch} <= after:
                assert loop.time() < deadline, f"{600 - len(after)} records never arrived"
                got = await second.receive(1000, 0.5)
                after.update(m.envelope.payload for m in got)
                ack_all(got)
        finally:
            await first.close()
            await second.close()

    run(scenario())


def test_missing_source_topic_is_a_clear_error(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("missing-src")
        source = source_for(tmp_path, kafka_bootstrap, f"g-{topic}", topics=[topic])
        with pytest.raises(TopicMissing, match=topic) as caught:
            await source.connect()
        assert isinstance(caught.value, PermanentError)
        await source.close()
        assert topic_partitions(kafka_bootstrap, topic) is None, "the source created the topic"

    run(scenario())


# ---------------------------------------------------------------- sink


def test_missing_sink_topic_with_create_false(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("missing-sink")
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic, create=False)
        with pytest.raises(TopicMissing, match=f"'{topic}' does not exist"):
            await sink.connect()
        # A templated topic: connect works, the message naming a missing topic fails for good.
        templated = sink_for(tmp_path, kafka_bootstrap, topic="t.{{wildcard(1)}}", create=False)
        await templated.connect()
        try:
            with pytest.raises(TopicMissing, match=topic):
                await send_one(templated, Envelope(subject=topic, payload=b"x"))
        finally:
            await templated.close()
        assert topic_partitions(kafka_bootstrap, topic) is None, "the sink created the topic"

    run(scenario())


def test_create_topic_with_partitions(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("created")
        sink = sink_for(
            tmp_path,
            kafka_bootstrap,
            topic=topic,
            create_topic={"partitions": 3, "replication_factor": 1},
        )
        await sink.connect()
        try:
            assert topic_partitions(kafka_bootstrap, topic) == 3
            envelopes = [
                Envelope(subject=topic, payload=f"v{i}".encode(), key=f"k{i % 7}".encode())
                for i in range(60)
            ]
            await asyncio.gather(*(send_one(sink, e) for e in envelopes))
            records = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic, 60)
            by_key: dict[bytes, set[int]] = {}
            for record in records:
                by_key.setdefault(record.key, set()).add(record.partition)
            assert all(len(p) == 1 for p in by_key.values()), "a key spread over partitions"
            assert len({r.partition for r in records}) > 1, "the partitioner used one partition"
        finally:
            await sink.close()

    run(scenario())


def test_explicit_partition(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("explicit")
        create_topic(kafka_bootstrap, topic, partitions=3)
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic, partition=2)
        await sink.connect()
        try:
            await asyncio.gather(
                *(
                    send_one(sink, Envelope(subject=topic, payload=b"p", key=bytes([i])))
                    for i in range(20)
                )
            )
            records = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic, 20)
            assert {r.partition for r in records} == {2}
        finally:
            await sink.close()
        wrong = sink_for(tmp_path, kafka_bootstrap, topic=topic, partition=3)
        with pytest.raises(PermanentError, match="3 partitions"):
            await wrong.connect()

    run(scenario())


def test_too_large_records_are_payload_too_large(kafka_bootstrap: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        topic = unique("large")
        # The broker refuses more than 10,000 bytes per batch on this topic.
        create_topic(kafka_bootstrap, topic, **{"max.message.bytes": "10000"})
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic)
        await sink.connect()
        try:
            with pytest.raises(PayloadTooLarge, match="too large"):  # the producer's limit
                await send_one(sink, Envelope(subject=topic, payload=b"x" * (2 * 1024 * 1024)))
            with pytest.raises(PayloadTooLarge, match="too large"):  # the broker's limit
                await send_one(sink, Envelope(subject=topic, payload=b"y" * 50_000))
            await send_one(sink, Envelope(subject=topic, payload=b"small"))  # the sink still works
        finally:
            await sink.close()

    run(scenario())


def test_timestamps_kafka_cannot_take_fall_back_to_the_producer_clock(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """2**64-1 (an AMQP timestamp) killed kafka-python's sender thread: every later send hung."""

    async def scenario() -> None:
        topic = unique("stamps")
        create_topic(kafka_bootstrap, topic)
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic)
        await sink.connect()
        past = time.time() - 1000
        odd = [2.0**64 - 1, -5.0, float("inf"), float("nan"), time.time() + 7200]
        try:
            before = time.time()
            batch = [
                Envelope(subject=topic, payload=str(i).encode(), timestamp=t)
                for i, t in enumerate(odd)
            ]
            # Bounded: with its sender thread dead, kafka-python never confirms anything.
            errors = await asyncio.wait_for(sink.send_batch(batch), 30)
            assert errors == [None] * len(odd)
            await send_one(sink, Envelope(subject=topic, payload=b"past", timestamp=past))
            after = time.time()
            records = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic, len(odd) + 1)
            assert [r.value for r in records] == [str(i).encode() for i in range(len(odd))] + [
                b"past"
            ]
            for record in records[:-1]:  # the producer's clock
                assert before * 1000 - 1 <= record.timestamp <= after * 1000 + 1
            assert records[-1].timestamp == int(past * 1000)
        finally:
            await sink.close()

    run(scenario())


def test_a_timestamp_the_broker_refuses_is_dead_lettered_and_the_sink_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One refused record made kafka-python's idempotent producer fail every later one."""

    async def scenario() -> None:
        topic = unique("refused-stamp")
        create_topic(kafka_bootstrap, topic, **{"message.timestamp.after.max.ms": "0"})
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic)
        await sink.connect()
        try:
            ahead = Envelope(subject=topic, payload=b"ahead", timestamp=time.time() + 30)
            with pytest.raises(MessageRejected, match=r"[Tt]imestamp"):
                await send_one(sink, ahead)
            try:
                await send_one(sink, Envelope(subject=topic, payload=b"next"))
            except ConnectionLost:  # the producer is replaced: the runtime reconnects
                await sink.connect()
                await send_one(sink, Envelope(subject=topic, payload=b"next"))
            [record] = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic, 1)
            assert record.value == b"next"
        finally:
            await sink.close()

    run(scenario())


class _RawName(str):
    """A header name kafka-python writes as its surrogateescape bytes (other clients can)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return str.encode(self, encoding, "surrogateescape")


def test_header_names_that_are_not_utf8_are_dead_lettered_and_never_written(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """confluent-kafka cannot read such a name (its Message.headers() crashed the process).

    The source hands such a record over as unreadable, with its value, key and coordinates
    (the runtime dead-letters it with the reason and acks it) and reads on; a sink refuses
    to write one, which would break every strict consumer downstream.
    """

    async def scenario() -> None:
        topic_in, topic_out = unique("rawname-in"), unique("rawname-out")
        create_topic(kafka_bootstrap, topic_in)
        raw_name = _RawName(b"n\xff\xfe".decode("utf-8", "surrogateescape"))
        records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
            (b"k", b"raw name", [("a", b"1"), (raw_name, b"v")]),
            (b"k", b"plain", [("a", b"2")]),
            (b"k", b"raw again", [(raw_name, b"w")]),
        ]
        await asyncio.to_thread(produce_raw, kafka_bootstrap, topic_in, records)
        group = f"g-{topic_in}"
        source = source_for(tmp_path, kafka_bootstrap, group, topics=[topic_in])
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic_out, create_topic={"partitions": 1})
        await source.connect()
        await sink.connect()
        try:
            received = await receive_n(source, 3)
            assert [m.envelope.payload for m in received] == [r[1] for r in records]
            unreadable = [m for m in received if m.error is not None]
            assert [m.envelope.payload for m in unreadable] == [b"raw name", b"raw again"]
            for message in unreadable:
                assert isinstance(message.error, HeaderError)
                assert "not UTF-8" in str(message.error)
                assert message.envelope.key == b"k"
                assert message.envelope.headers[KAFKA_TOPIC] == [topic_in]
            plain = received[1].envelope
            assert plain.headers["a"] == ["2"]
            plain.subject = topic_out
            await send_one(sink, plain)
            escaped = {"n%ED%B3%BF%ED%B3%BE": ["v"]}  # the NATS form of that name
            with pytest.raises(HeaderError, match="is not UTF-8 text"):
                await send_one(sink, Envelope(subject=topic_out, payload=b"x", headers=escaped))
            ack_all(received)  # the runtime acks a message once it is dead-lettered
            await eventually(lambda: committed(kafka_bootstrap, group, topic_in, 1) == [3])
            await send_one(sink, Envelope(subject=topic_out, payload=b"after"))
            out = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic_out, 2)
            assert [r.value for r in out] == [b"plain", b"after"]
        finally:
            await source.close()
            await sink.close()

    run(scenario())


# ---------------------------------------------------------------- security


def test_scram_sha_256(kafka_scram: KafkaScram, tmp_path: Path) -> None:
    async def scenario() -> None:
        kafka = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": kafka_scram.mechanism,
            "sasl_username": kafka_scram.username,
            "sasl_password": kafka_scram.password,
        }
        topic = unique("scram")
        sink = sink_for(
            tmp_path, kafka_scram.bootstrap, kafka, topic=topic, create_topic={"partitions": 1}
        )
        await sink.connect()
        try:
            await asyncio.gather(
                *(
                    send_one(sink, Envelope(subject=topic, payload=f"s{i}".encode()))
                    for i in range(10)
                )
            )
        finally:
            await sink.close()
        source = source_for(tmp_path, kafka_scram.bootstrap, f"g-{topic}", kafka, topics=[topic])
        await source.connect()
        try:
            received = await receive_n(source, 10)
            assert [m.envelope.payload for m in received] == [f"s{i}".encode() for i in range(10)]
            ack_all(received)
        finally:
            await source.close()

    run(scenario())


def test_scram_wrong_password_is_permanent_and_secret(
    kafka_scram: KafkaScram, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"

    async def scenario() -> None:
        kafka = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": kafka_scram.mechanism,
            "sasl_username": kafka_scram.username,
            "sasl_password": wrong,
        }
        sink = sink_for(tmp_path, kafka_scram.bootstrap, kafka, topic="anything")
        with pytest.raises(KafkaAuthenticationFailed) as caught:
            await sink.connect()
        message = str(caught.value)
        assert "authentication failed" in message and kafka_scram.username in message
        assert wrong not in message
        assert isinstance(caught.value, PermanentError)

    caplog.set_level("DEBUG")
    run(scenario())
    assert wrong not in caplog.text


# ---------------------------------------------------------------- broker restart


@pytest.mark.slow
def test_kafka_restart_source_and_sink_resume(
    kafka_bootstrap: str, tmp_path: Path, services: Services
) -> None:
    """Sends during the outage fail retryably or succeed later; nothing is lost."""

    async def scenario() -> None:
        topic = unique("restart")
        create_topic(kafka_bootstrap, topic, partitions=3)
        sink = sink_for(tmp_path, kafka_bootstrap, topic=topic)
        source = source_for(tmp_path, kafka_bootstrap, f"g-{topic}", topics=[topic])
        await sink.connect()
        await source.connect()
        sent: set[bytes] = set()
        received: set[bytes] = set()
        failures: list[BaseException] = []
        stop = asyncio.Event()
        produced = asyncio.Event()

        async def send_until_all(payload: bytes) -> None:
            while True:
                try:
                    await send_one(sink, Envelope(subject=topic, payload=payload, key=payload[-1:]))
                    sent.add(payload)
                    return
                except RetryableError as exc:  # what the runtime retries
                    failures.append(exc)
                    await asyncio.sleep(0.5)

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                await asyncio.gather(*(send_until_all(f"r{i + j}".encode()) for j in range(20)))
                i += 20
                await asyncio.sleep(0.05)
            produced.set()

        async def consume() -> None:
            while True:
                try:
                    got = await source.receive(500, 0.2)
                except ConnectionLost:
                    # As the runtime does: reconnect until Kafka is back.
                    while True:
                        try:
                            await source.connect()
                            break
                        except RetryableError:
                            await asyncio.sleep(0.5)
                    continue
                received.update(m.envelope.payload for m in got)
                ack_all(got)
                if produced.is_set() and sent <= received:
                    return

        try:
            producer = asyncio.create_task(produce())
            consumer = asyncio.create_task(consume())
            await asyncio.sleep(2)
            before = len(sent)
            await asyncio.to_thread(services.restart, "kafka")
            await asyncio.sleep(3)
            stop.set()
            await asyncio.wait_for(producer, 180)
            await asyncio.wait_for(consumer, 120)
            assert before > 0 and len(sent) > before, "sends resumed after the restart"
            assert not sent - received, f"{len(sent - received)} confirmed records lost"
            assert all(isinstance(f, RetryableError) for f in failures)
        finally:
            await source.close()
            await sink.close()
        records = await asyncio.to_thread(consume_raw, kafka_bootstrap, topic, len(sent))
        values = [r.value for r in records]
        duplicates = len(values) - len(set(values))
        print(
            f"\nkafka restart: {len(sent)} sent, {len(failures)} retryable failures, "
            f"{duplicates} duplicates in the topic"
        )

    run(scenario())


# ---------------------------------------------------------------- librdkafka pass-through


def test_librdkafka_properties_pass_through_to_both_clients(tmp_path: Path) -> None:
    extra = {"socket.keepalive.enable": True, "fetch.max.bytes": 10485760}
    source = source_for(tmp_path, "127.0.0.1:9092", "g", {"librdkafka": extra}, topics=["t"])
    sink = sink_for(tmp_path, "127.0.0.1:9092", {"librdkafka": extra}, topic="t")
    for options in (source.consumer_options(), sink.producer_options()):
        assert options["socket.keepalive.enable"] is True
        assert options["fetch.max.bytes"] == 10485760
    assert source.consumer_options()["partition.assignment.strategy"] == "cooperative-sticky"
    assert sink.producer_options()["acks"] == "all"


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(sorted(OWNED_PROPERTIES)),
    shout=st.lists(st.booleans(), min_size=60, max_size=60),
    pad=st.sampled_from(["", " ", "  "]),
)
def test_properties_natsbridge_owns_are_refused_naming_what_to_use(
    key: str, shout: list[bool], pad: str
) -> None:
    spelled = pad + "".join(c.upper() if up else c for c, up in zip(key, shout, strict=False))
    with pytest.raises(ConfigError) as caught, tempfile.TemporaryDirectory() as directory:
        load_route(
            Path(directory),
            "127.0.0.1:9092",
            {"connection": "nats", "subject": "in.*"},
            {"connection": "kafka", "topic": "t"},
            {"librdkafka": {spelled: "x"}},
        )
    [problem] = caught.value.problems
    assert "connections.kafka.librdkafka" in problem
    assert f"librdkafka: {spelled!r} is set by natsbridge ({OWNED_PROPERTIES[key]})" in problem
