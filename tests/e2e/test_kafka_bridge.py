"""Kafka <-> NATS/JetStream end to end, through `natsbridge run` against the harness brokers.

Exactly once both ways through three kill -9s and a Kafka restart (100,000 keyed
messages each way) is tests/e2e/test_kafka_exactly_once.py; here, at-least-once through
kill -9 (JetStream -> Kafka), the example, group sharing and dead letters.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from natsbridge.bridge.broker.broker import Broker
from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.kafka, pytest.mark.nats]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "kafka-nats.yaml"
WAIT_S = 120.0


# ---------------------------------------------------------------- helpers


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Any]:
    made: list[BridgeProcess] = []

    def make(config: dict[str, Any] | Path, name: str = "bridge") -> BridgeProcess:
        path = (
            config if isinstance(config, Path) else write_config(tmp_path / f"{name}.yaml", config)
        )
        process = BridgeProcess(path, tmp_path / f"{name}-data")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()


def create_topic(bootstrap: str, topic: str, partitions: int = 6, **configs: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        if topic in admin.list_topics():
            return
        spec: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
        if configs:
            spec["configs"] = configs
        admin.create_topics({topic: spec}, wait_for_metadata=True)
    finally:
        admin.close()


def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for key, value, headers in records:
            producer.send(topic, value=value, key=key, headers=headers)
        producer.flush()
    finally:
        producer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return dict(consumer.end_offsets([TopicPartition(topic, p) for p in partitions]))
    finally:
        consumer.close()


def read_topic(
    bootstrap: str, topic: str, start: dict[TopicPartition, int] | None = None
) -> list[Any]:
    """Every record of `topic` from `start` (default: the beginning) to its current end."""
    end = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign(list(end))
        for tp in end:
            consumer.seek(tp, (start or {}).get(tp, 0))
        records: list[Any] = []
        want = sum(end[tp] - (start or {}).get(tp, 0) for tp in end)
        deadline = time.monotonic() + 120
        while len(records) < want and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
                records.extend(
                    r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)]
                )
        return records
    finally:
        consumer.close(autocommit=False)


async def stream_messages(nats_url: str, stream: str) -> list[Any]:
    """Every message stored in `stream`, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("", stream=stream)
        messages: list[Any] = []
        deadline = time.monotonic() + 120
        while len(messages) < total and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(min(1000, total - len(messages)), timeout=2)
            except nats.errors.TimeoutError:
                continue
            for message in batch:
                await message.ack()
            messages.extend(batch)
        await sub.unsubscribe()
        return messages
    finally:
        await nc.close()


def wait_for(check: Any, timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def kafka_to_js_config(tag: str, bootstrap: str, nats_url: str, topic: str) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"e2e-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [bootstrap]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": "kafka-to-js",
                "from": {"connection": "kafka", "topics": [topic], "group_id": f"g-{tag}"},
                "to": {
                    "connection": "nats",
                    "subject": f"k{tag}.{{{{partition}}}}",
                    # Each kill -9 costs the group's session timeout (~45 s) before the
                    # partitions move on, so over several kills a record can be read
                    # again more than the default 2 min after its first copy; exactly-once
                    # holds within the duplicate window, which must cover that.
                    "jetstream": {"stream": f"K_{tag}", "duplicate_window": "10m"},
                },
                "delivery": "exactly_once",
            }
        ],
    }


def assert_per_key_order(values: list[str]) -> None:
    """`key:seq` values: the first copy of each arrives in increasing seq order per key."""
    last: dict[str, int] = defaultdict(lambda: -1)
    seen: set[str] = set()
    for value in values:
        if value in seen:
            continue  # a redelivered copy (at least once)
        seen.add(value)
        key, seq = value.rsplit(":", 1)
        assert int(seq) > last[key], f"key {key}: {seq} after {last[key]}"
        last[key] = int(seq)


# ---------------------------------------------------------------- the example, as written


def test_both_routes_of_the_example_work(
    kafka_bootstrap: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    """examples/kafka-nats.yaml unchanged: keys, headers, one subject per partition."""
    create_topic(kafka_bootstrap, "clicks")
    create_topic(kafka_bootstrap, "telemetry")
    bridge = bridge_factory(EXAMPLE)
    bridge.start()
    records = [
        (
            f"user-{i % 7}".encode(),
            f"{tag}-click-{i}".encode(),
            [("X-Page", b"/home"), ("X-Page", f"/p{i}".encode())],
        )
        for i in range(60)
    ]
    produce(kafka_bootstrap, "clicks", records)

    def mine() -> list[Any]:
        return [
            m
            for m in asyncio.run(stream_messages(nats_url, "CLICKS"))
            if m.data.startswith(tag.encode())
        ]

    wait_for(lambda: len(mine()) >= 60, what="60 clicks in JetStream")
    clicks = {m.data: m for m in mine()}
    assert len(clicks) == 60
    for key, value, _ in records:
        message = clicks[value]
        partition = message.headers["Kafka-Partition"]
        assert message.subject == f"kafka.clicks.{partition}"
        assert message.headers["Kafka-Key"] == key.decode()
        offset = message.headers["Kafka-Offset"]
        assert message.headers["Nats-Msg-Id"] == f"kafka:clicks:{partition}:{offset}"

    start = end_offsets(kafka_bootstrap, "telemetry")

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        for i in range(30):
            await nc.publish(
                f"telemetry.dev{i % 3}.temp", f"{tag}-t-{i}".encode(), headers={"X-Unit": "C"}
            )
        await nc.flush()
        await nc.close()

    asyncio.run(publish())

    def arrived() -> list[Any]:
        return [
            r
            for r in read_topic(kafka_bootstrap, "telemetry", start)
            if r.value.startswith(tag.encode())
        ]

    wait_for(lambda: len(arrived()) >= 30, what="30 telemetry records in Kafka")
    for record in arrived():
        i = int(record.value.decode().rsplit("-", 1)[1])
        assert record.key == f"dev{i % 3}".encode()
        assert ("X-Unit", b"C") in record.headers
    assert bridge.terminate() == 0


# ---------------------------------------------------------------- faults


@pytest.mark.slow
def test_jetstream_to_kafka_through_kill_9(
    kafka_bootstrap: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    count, keys = 100_000, 50
    topic, stream = f"e2e-out-{tag}", f"IN_{tag}"
    create_topic(kafka_bootstrap, topic, partitions=6)
    sent = [f"d{i % keys}:{i // keys}" for i in range(count)]

    async def preload() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"in{tag}.*"])
        for first in range(0, count, 1000):
            await asyncio.gather(
                *(
                    js.publish(f"in{tag}.{v.split(':')[0]}", v.encode())
                    for v in sent[first : first + 1000]
                )
            )
        await nc.close()

    asyncio.run(preload())
    config = {
        "version": 1,
        "bridge": {"id": f"e2e-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": "js-to-kafka",
                "from": {
                    "connection": "nats",
                    "subject": f"in{tag}.*",
                    "jetstream": {"stream": stream, "durable": "bridge"},
                },
                "to": {"connection": "kafka", "topic": topic, "key": "{{wildcard(1)}}"},
            }
        ],
    }
    bridge = bridge_factory(config)

    def in_topic() -> int:
        return sum(end_offsets(kafka_bootstrap, topic).values())

    for step in range(2):
        bridge.start()
        target = (step + 1) * count // 3
        wait_for(lambda t=target: in_topic() >= t, what=f"{target} records before a kill")
        bridge.kill()
    bridge.start()
    wait_for(
        lambda: len({r.value for r in read_topic(kafka_bootstrap, topic)}) >= count,
        timeout=300,
        what="all records",
    )
    records = read_topic(kafka_bootstrap, topic)
    assert {r.value.decode() for r in records} == set(sent), "records lost"
    for record in records:
        assert record.key == record.value.split(b":")[0]
    assert bridge.terminate() == 0
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for record in records:
        by_partition[record.partition].append(record)
    for partition_records in by_partition.values():
        ordered = sorted(partition_records, key=lambda r: r.offset)
        assert_per_key_order([r.value.decode() for r in ordered])


@pytest.mark.slow
def test_two_bridges_share_the_partitions(
    kafka_bootstrap: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    topic = f"e2e-shared-{tag}"
    create_topic(kafka_bootstrap, topic, partitions=6)
    config = kafka_to_js_config(tag, kafka_bootstrap, nats_url, topic)
    first = bridge_factory(config, "first")
    second = bridge_factory(config, "second")
    first.start()
    second.start()
    time.sleep(5)  # both joined: the group has rebalanced over the two
    batch = [f"k{i % 60}:{i}" for i in range(3000)]
    produce(kafka_bootstrap, topic, [(v.split(":")[0].encode(), v.encode(), []) for v in batch])
    stream = f"K_{tag}"
    wait_for(lambda: asyncio.run(stream_count(nats_url, stream)) >= 3000, what="first batch")

    def received(bridge: BridgeProcess) -> int:
        return int(bridge.routes()["kafka-to-js"]["counters"]["received"])

    assert received(first) > 0 and received(second) > 0, "one bridge read everything"
    assert first.terminate() == 0  # its partitions move to the second bridge
    more = [f"k{i % 60}:{i}" for i in range(3000, 6000)]
    produce(kafka_bootstrap, topic, [(v.split(":")[0].encode(), v.encode(), []) for v in more])
    wait_for(lambda: asyncio.run(stream_count(nats_url, stream)) >= 6000, what="second batch")
    time.sleep(1)
    values = Counter(m.data.decode() for m in asyncio.run(stream_messages(nats_url, stream)))
    assert set(values) == set(batch + more), "messages lost"
    assert max(values.values()) == 1, "duplicates in JetStream under exactly_once"
    assert second.terminate() == 0


def test_oversized_record_is_dead_lettered(
    kafka_bootstrap: str, nats_url: str, tag: str, bridge_factory: Any
) -> None:
    """A message over the topic's max.message.bytes goes to the dead-letter stream."""
    topic = f"e2e-small-{tag}"
    create_topic(kafka_bootstrap, topic, partitions=1, **{"max.message.bytes": "10000"})
    config = {
        "version": 1,
        "bridge": {"id": f"e2e-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [kafka_bootstrap]},
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": "nats-to-kafka",
                "from": {"connection": "nats", "subject": f"big{tag}.*"},
                "to": {"connection": "kafka", "topic": topic},
            }
        ],
    }
    bridge = bridge_factory(config)
    bridge.start()

    async def publish() -> None:
        nc = await nats.connect(nats_url)
        await nc.publish(f"big{tag}.a", b"before")
        await nc.publish(f"big{tag}.a", b"x" * 50_000)
        await nc.publish(f"big{tag}.a", b"after")
        await nc.flush()
        await nc.close()

    asyncio.run(publish())
    wait_for(lambda: sum(end_offsets(kafka_bootstrap, topic).values()) >= 2, what="2 records")
    wait_for(
        lambda: (
            bridge.routes()["nats-to-kafka"]["counters"]["dead_lettered"] == {"RecordTooLarge": 1}
        ),
        what="one dead letter",
    )
    assert bridge.terminate() == 0
    assert [r.value for r in read_topic(kafka_bootstrap, topic)] == [b"before", b"after"]

    async def dead_letters() -> list[Any]:
        broker = await Broker.open(bridge.data_dir)
        try:
            return await broker.messages("nats-to-kafka.dead-letters")
        finally:
            await broker.close()

    [dead] = asyncio.run(dead_letters())
    assert dead.payload == b"x" * 50_000
    reason = dead.headers["Bridge-Reason"][0]
    assert "too large" in reason and topic in reason
