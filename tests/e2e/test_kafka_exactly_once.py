"""Exactly once both ways between Kafka and JetStream, through kill -9 and a Kafka restart.

One bridge, two `exactly_once` routes running at the same time:

* Kafka -> JetStream: 100,000 keyed records (written by kafka-python) into a stream; the
  bridge's `Nats-Msg-Id` from topic/partition/offset lets JetStream drop a re-read record.
* JetStream -> Kafka: 100,000 messages of a preloaded stream into a topic through the
  transactional sink; kafka-python reads it with ``isolation_level=read_committed``.

The bridge is killed with SIGKILL three times and Kafka is restarted once (the bridge
running) while both routes move; then everything must be there exactly once, with each
key's messages in order. The consumer group's session is 6 s (the `librdkafka:` map), so
a killed member's partitions move on quickly and the test stays bounded in time. The
test's clients (kafka-python, nats-py) are not the code under test (confluent-kafka).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from tests.e2e.bridge_process import BridgeProcess, write_config
from tests.e2e.jetstream import stream_count

pytestmark = [pytest.mark.kafka, pytest.mark.nats, pytest.mark.slow]

COUNT = 100_000
KEYS = 100
PARTITIONS = 6
WAIT_S = 300.0
IDLE_S = 3.0
FAULTS = ("kill", "kafka", "kill", "kill")


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[list[BridgeProcess]]:
    made: list[BridgeProcess] = []
    yield made
    for process in made:
        process.stop()


def test_both_ways_exactly_once_through_kill_9_and_a_kafka_restart(
    kafka_bootstrap: str, nats_url: str, tmp_path: Path, bridge: list[BridgeProcess], services: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    topic_in, stream_out = f"eos-in-{tag}", f"EOS_OUT_{tag}"
    stream_in, topic_out = f"EOS_IN_{tag}", f"eos-out-{tag}"
    sent = [f"k{i % KEYS}:{i // KEYS}" for i in range(COUNT)]
    _create_topics(kafka_bootstrap, topic_in, topic_out)
    _produce(kafka_bootstrap, topic_in, sent)
    asyncio.run(_preload(nats_url, stream_in, f"eosin{tag}", sent))
    config = _config(tag, kafka_bootstrap, nats_url, topic_in, stream_in, topic_out, stream_out)
    process = BridgeProcess(write_config(tmp_path / "bridge.yaml", config), tmp_path / "data")
    bridge.append(process)

    def in_stream() -> int:
        return asyncio.run(stream_count(nats_url, stream_out))

    def in_topic() -> int:  # end offsets: aborted records and markers count too (progress only)
        return _end_offsets(kafka_bootstrap, topic_out)

    for step, fault in enumerate(FAULTS):
        process.start()
        target = (step + 1) * COUNT // (len(FAULTS) + 1)
        _wait(lambda t=target: in_stream() >= t and in_topic() >= t, f"{target} both ways")
        if fault == "kafka":
            services.restart("kafka")
            _wait(lambda t=target: in_stream() >= t + COUNT // 20, "progress after the restart")
        process.kill()
    process.start()
    _wait(lambda: in_stream() >= COUNT, "everything in JetStream", process)
    records = _read_committed(kafka_bootstrap, topic_out, COUNT, process)
    assert process.terminate() == 0

    stored = asyncio.run(_stream_payloads(nats_url, stream_out))
    _assert_exactly_once_in_order("Kafka -> JetStream", stored, sent)
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for partition, offset, key, value in records:
        assert key == value.split(":")[0], f"record {value} has key {key}"
        by_partition[partition].append((offset, value))
    in_offset_order = [v for p in by_partition.values() for _, v in sorted(p)]
    _assert_exactly_once_in_order("JetStream -> Kafka", in_offset_order, sent)


# ---------------------------------------------------------------- the bridge


def _config(
    tag: str,
    bootstrap: str,
    nats_url: str,
    topic_in: str,
    stream_in: str,
    topic_out: str,
    stream_out: str,
) -> dict[str, Any]:
    return {
        "version": 1,
        "bridge": {"id": f"eos-{tag}", "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {
                "kind": "kafka",
                "bootstrap_servers": [bootstrap],
                "librdkafka": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
            },
            "nats": {"kind": "nats", "servers": [nats_url]},
        },
        "routes": [
            {
                "name": "kafka-to-js",
                "delivery": "exactly_once",
                "from": {"connection": "kafka", "topics": [topic_in], "group_id": f"g-{tag}"},
                "to": {
                    "connection": "nats",
                    "subject": f"eosout{tag}.{{{{partition}}}}",
                    "jetstream": {"stream": stream_out, "duplicate_window": "10m"},
                },
            },
            {
                "name": "js-to-kafka",
                "delivery": "exactly_once",
                "from": {
                    "connection": "nats",
                    "subject": f"eosin{tag}.*",
                    "jetstream": {"stream": stream_in, "durable": "bridge"},
                },
                "to": {"connection": "kafka", "topic": topic_out, "key": "{{wildcard(1)}}"},
            },
        ],
    }


# ---------------------------------------------------------------- the oracle's clients


def _create_topics(bootstrap: str, *topics: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        spec = {"num_partitions": PARTITIONS, "replication_factor": 1}
        admin.create_topics({t: spec for t in topics}, wait_for_metadata=True)
    finally:
        admin.close()


def _produce(bootstrap: str, topic: str, values: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for value in values:
            producer.send(topic, value=value.encode(), key=value.split(":")[0].encode())
        producer.flush()
    finally:
        producer.close()


async def _preload(nats_url: str, stream: str, prefix: str, values: list[str]) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{prefix}.*"])
        for first in range(0, len(values), 1000):
            window = values[first : first + 1000]
            await asyncio.gather(
                *(js.publish(f"{prefix}.{v.split(':')[0]}", v.encode()) for v in window)
            )
    finally:
        await nc.close()


def _end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(ends.values()))
    finally:
        consumer.close()


def _read_committed(
    bootstrap: str, topic: str, want: int, process: BridgeProcess
) -> list[tuple[int, int, str, str]]:
    """(partition, offset, key, value) of every committed record of `topic`.

    Reads until `want` records came and then nothing more for IDLE_S (a late duplicate
    would show then); fails after WAIT_S.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    records: list[tuple[int, int, str, str]] = []
    deadline = time.monotonic() + WAIT_S
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
            records += [(r.partition, r.offset, r.key.decode(), r.value.decode()) for r in batch]
            if batch:
                idle_since = time.monotonic()
            elif len(records) >= want and time.monotonic() - idle_since > IDLE_S:
                return records
    finally:
        consumer.close(autocommit=False)
    raise AssertionError(f"{len(records)} of {want} committed records:\n{process.tail()}")


async def _stream_payloads(nats_url: str, stream: str) -> list[str]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("", durable="oracle", stream=stream)
        payloads: list[str] = []
        while len(payloads) < total:
            for message in await sub.fetch(min(1000, total - len(payloads)), timeout=10):
                payloads.append(message.data.decode())
                await message.ack()
        return payloads
    finally:
        await nc.close()


def _wait(check: Callable[[], bool], what: str, process: BridgeProcess | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{process.tail() if process else ''}")


def _assert_exactly_once_in_order(route: str, got: list[str], sent: list[str]) -> None:
    counts = Counter(got)
    missing = set(sent) - set(counts)
    assert not missing, f"{route}: {len(missing)} lost, e.g. {sorted(missing)[:3]}"
    duplicated = [v for v, n in counts.items() if n > 1]
    assert not duplicated, f"{route}: {len(duplicated)} duplicated, e.g. {duplicated[:3]}"
    assert len(got) == len(sent), f"{route}: {len(got)} values, {len(sent)} sent"
    last: dict[str, int] = defaultdict(lambda: -1)
    for value in got:
        key, seq = value.rsplit(":", 1)
        assert int(seq) > last[key], f"{route}: key {key}: {seq} after {last[key]}"
        last[key] = int(seq)
