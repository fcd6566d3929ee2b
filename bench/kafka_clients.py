"""Kafka through confluent-kafka (librdkafka) for the benchmarks: topics, counts, raw legs.

The raw legs are the best a Python client does with the guarantee the bridge gives:

* ``produce``: acks=all and idempotence, linger 5 ms, keyed over 1,000 keys, every
  delivery report checked (a single failed delivery fails the benchmark).
* ``consume``: a fresh consumer group, ``consume(1000)`` batches, each batch's offsets
  committed asynchronously (the last one synchronously): at-least-once with commits.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import NATS_URL

BOOTSTRAP = os.environ.get("NATSBRIDGE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 6
KEYS = 1000
LINGER_MS = 5


def create_topic(topic: str, partitions: int = PARTITIONS) -> None:
    """Create `topic` and wait until the broker confirms it."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    futures = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=30)
    futures[topic].result(timeout=60)


def delete_topics(*topics: str) -> None:
    """Delete benchmark topics (best effort: they are uniquely named anyway)."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, "log_level": 4})
    for future in admin.delete_topics(list(topics), operation_timeout=30).values():
        with contextlib.suppress(KafkaException):
            future.result(timeout=60)


def keys() -> list[bytes]:
    """The benchmark's message keys: 1,000 of them, used round-robin."""
    return [f"key-{i}".encode() for i in range(KEYS)]


def produce(topic: str, payload: bytes, count: int) -> float:
    """Messages/s of a confluent-kafka producer (acks=all, idempotent) writing `count`."""
    failures: list[str] = []

    def delivered(err: object, _message: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": LINGER_MS,
        }
    )
    names = keys()
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, names[i % KEYS], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(120) or failures:
        raise SystemExit(f"raw produce into {topic} lost messages: {failures[:3]}")
    return count / (time.perf_counter() - start)


def consume(topic: str, count: int, group: str) -> float:
    """Messages/s of a confluent-kafka consumer reading `count` and committing each batch.

    Timed from the first record: the group join is not counted.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received = 0
    start = 0.0
    while received < count:
        batch = consumer.consume(1000, 1.0)
        if batch and not start:
            start = time.perf_counter()
        errors = [m.error() for m in batch if m.error() is not None]
        if errors:
            raise SystemExit(f"raw consume of {topic} failed: {errors[0]}")
        received += len(batch)
        if received < count and batch:
            consumer.commit(asynchronous=True)
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - start
    consumer.close()
    return count / elapsed


@contextlib.contextmanager
def topic_size(topic: str) -> Iterator[Callable[[], int]]:
    """A function counting the records of `topic` (the sum of its partitions' end offsets).

    Right for non-transactional writers only: a transaction marker takes an offset too.
    """
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"size-{topic}"})
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]

        def size() -> int:
            return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions)

        yield size
    finally:
        consumer.close()


def commit_group_at_start(topic: str, group: str) -> None:
    """Commit offset 0 on every partition of `topic` for `group`.

    For consumers that start a group without committed offsets at the end of the topic
    (Sarama's default, so nats-kafka's): they then read it from the beginning.
    """
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        offsets = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def bridge_config(bridge_id: str, route: dict[str, Any]) -> dict[str, Any]:
    """A one-route bridge config with a `kafka` and a `nats` connection."""
    return {
        "version": 1,
        "bridge": {"id": bridge_id, "data_dir": "${env:NATSBRIDGE_DATA_DIR}"},
        "connections": {
            "kafka": {"kind": "kafka", "bootstrap_servers": [BOOTSTRAP]},
            "nats": {"kind": "nats", "servers": [NATS_URL]},
        },
        "routes": [route],
    }
