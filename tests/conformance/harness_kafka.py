"""The `kafka` connector on Kafka: a one-partition topic per address (admin client)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import TopicPartition

from natsbridge.bridge.envelope import Envelope
from tests.conformance.harness import Harness, Native, Reader
from tests.e2e.hostile import (
    Case,
    Message,
    common_cases,
    kafka_cases,
    kafka_unsendable,
    produce_kafka,
)

MAX_MESSAGE_BYTES = 512 * 1024
"""The topics' max.message.bytes: a larger record is the broker's to refuse."""


class _TopicReader(Reader):
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        partition = TopicPartition(topic, 0)
        self.consumer.assign([partition])
        self.consumer.seek_to_beginning(partition)

    def _read(self, count: int, timeout: float) -> list[Native]:
        out: list[Native] = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            polled = self.consumer.poll(timeout_ms=200, max_records=count - len(out))
            for records in polled.values():
                out.extend(
                    Native(r.value or b"", tuple((n, v.decode()) for n, v in r.headers or []))
                    for r in records
                )
        return out

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        return await asyncio.to_thread(self._read, count, timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self.consumer.close, autocommit=False)


class KafkaHarness(Harness):
    """Source: a consumer group per address; sink: an idempotent producer."""

    id = "kafka"
    kind = "kafka"
    fixture = "kafka_bootstrap"
    mark = "kafka"
    acks_each = False
    unreadable = frozenset({"invalid-utf8-name"})  # confluent-kafka cannot read such a name

    def connection(self) -> dict[str, Any]:
        return {"kind": "kafka", "bootstrap_servers": [self.endpoint]}

    async def new_address(self) -> str:
        topic = f"{self.name}-{len(self.cleanups)}"

        def create() -> None:
            admin = KafkaAdminClient(bootstrap_servers=self.endpoint)
            try:
                configs = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
                admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
            finally:
                admin.close()

        await asyncio.to_thread(create)
        self.cleanups.append(topic)
        return topic

    def source(self, address: str) -> dict[str, Any]:
        return {"topics": [address], "group_id": f"g-{address}"}

    def sink(self, address: str) -> dict[str, Any]:
        return {"topic": address}

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        def send() -> None:
            producer = KafkaProducer(bootstrap_servers=self.endpoint, acks="all")
            try:
                for m in messages:
                    headers = [(n, v.encode()) for n, v in m.headers]
                    producer.send(address, value=m.payload, headers=headers).get(timeout=30)
            finally:
                producer.close(timeout=10)

        await asyncio.to_thread(send)

    async def reader(self, address: str) -> Reader:
        return await asyncio.to_thread(_TopicReader, self.endpoint, address)

    def refused(self, address: str) -> tuple[Envelope, str]:
        envelope = Envelope(subject=address, payload=b"x" * (MAX_MESSAGE_BYTES + 64 * 1024))
        return envelope, f"a record over the topic's max.message.bytes ({MAX_MESSAGE_BYTES})"

    def hostile_cases(self) -> list[Case]:
        cases = common_cases(self.name) + kafka_cases()
        return [case for case in cases if kafka_unsendable(case) is None]

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        return await asyncio.to_thread(produce_kafka, self.endpoint, address, batch)

    def ports(self) -> set[int]:
        return {int(self.endpoint.rsplit(":", 1)[1])}

    async def cleanup(self) -> None:
        def delete() -> None:
            admin = KafkaAdminClient(bootstrap_servers=self.endpoint)
            try:
                admin.delete_topics(self.cleanups)
            finally:
                admin.close()

        with contextlib.suppress(Exception):
            await asyncio.to_thread(delete)
