"""The legacy side of a Kafka migration: the topic itself, read by offsets.

Parity (bridge.migrate.kinds.LegacySide): the records of the source's topics from the
window's start (`offsets_for_times`) to each partition's end as of the read, then the
stream, whose copies pair with the records by their ``Kafka-Topic``/``-Partition``/
``-Offset`` headers. A topic keeps its records, so no tap is needed. Lag: the mirror's
consumer group, committed offsets against the end.

Nothing here joins or commits for any consumer group: the window is read through
`assign()` with a throw-away group id and auto-commit off, and the tap's lag through
`committed()`, which only asks the group coordinator. Blocking (confluent-kafka): callers
run the blocking functions on a thread.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from natsbridge.bridge.errors import PermanentError, RetryableError
from natsbridge.bridge.migrate.compare import Seen, Where, content_digest
from natsbridge.bridge.migrate.kinds import LegacyContext, StreamMessage, StreamReader
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSource
from natsbridge.mappings import headers as h
from natsbridge.mappings.kafka import kafka_to_nats_headers, key_from_headers

TIMEOUT_S = 10.0  # metadata, watermarks, offsets_for_times, committed
POLL_S = 1.0
IDLE_POLLS_MAX = 10  # polls without a record before a partition read is given up
FETCH_MAX = 1000  # records per consume() call


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets of one partition inside the window: [start, end)."""

    topic: str
    partition: int
    start: int
    end: int


def _consumer(connection: KafkaConnection, group: str) -> Any:
    try:
        from confluent_kafka import Consumer

        from natsbridge.connectors.kafka.client import ClientErrors, settings
    except ImportError:
        raise PermanentError(
            "kafka: parity and lag read the topic with confluent-kafka, which is not "
            "installed: pip install 'natsbridge[kafka]' (or confluent-kafka)"
        ) from None
    return Consumer(
        settings(
            connection,
            ClientErrors(),
            **{
                "client.id": f"{connection.client_id}-verify",
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
        )
    )


def _topics(consumer: Any, source: KafkaSource) -> dict[str, int]:
    """The source's topics that exist, with their partition counts."""
    metadata = consumer.list_topics(timeout=TIMEOUT_S)
    if source.topics:
        wanted: Iterable[str] = source.topics
    else:
        pattern = re.compile(source.topic_pattern or "")
        wanted = [name for name in metadata.topics if pattern.fullmatch(name)]
    found = {}
    for name in wanted:
        topic = metadata.topics.get(name)
        if topic is not None and topic.error is None:
            found[name] = len(topic.partitions)
    return found


def _ranges(consumer: Any, topics: dict[str, int], since: float) -> list[PartitionRange]:
    from confluent_kafka import TopicPartition

    wanted = [
        TopicPartition(topic, partition, int(since * 1000))
        for topic, count in topics.items()
        for partition in range(count)
    ]
    if not wanted:
        return []
    starts = consumer.offsets_for_times(wanted, timeout=TIMEOUT_S)
    out = []
    for found in starts:
        _, end = consumer.get_watermark_offsets(found, timeout=TIMEOUT_S, cached=False)
        start = found.offset if found.offset >= 0 else end  # -1: nothing that recent
        out.append(PartitionRange(found.topic, found.partition, start, end))
    return out


def read_window(
    connection: KafkaConnection, source: KafkaSource, since: float, headers: Sequence[str]
) -> tuple[list[Seen], list[PartitionRange]]:
    """Every record of the source's topics from `since` to the end as of now, as Seen."""
    consumer = _consumer(connection, f"natsbridge-verify-{uuid.uuid4().hex[:12]}")
    from confluent_kafka import KafkaError, KafkaException, TopicPartition  # _consumer checked

    try:
        try:
            ranges = _ranges(consumer, _topics(consumer, source), since)
        except KafkaException as exc:
            raise RetryableError(f"kafka: reading the window's offsets: {exc}") from None
        todo = {(r.topic, r.partition): r for r in ranges if r.start < r.end}
        if not todo:
            return [], ranges
        consumer.assign([TopicPartition(t, p, r.start) for (t, p), r in todo.items()])
        seen: list[Seen] = []
        idle = 0
        while todo and idle < IDLE_POLLS_MAX:
            batch = consumer.consume(FETCH_MAX, timeout=POLL_S)
            idle = 0 if batch else idle + 1
            for record in batch:
                error = record.error()
                where = (record.topic(), record.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.pop(where, None)
                        continue
                    raise RetryableError(f"kafka: reading {where[0]}[{where[1]}]: {error}")
                window = todo.get(where)
                if window is None or record.offset() >= window.end:
                    todo.pop(where, None)
                    continue
                seen.append(_seen_record(record, headers))
                if record.offset() >= window.end - 1:
                    todo.pop(where, None)
        if todo:
            left = ", ".join(f"{t}[{p}]" for t, p in todo)
            raise RetryableError(f"kafka: no records arrived from {left} within the read")
        return seen, ranges
    finally:
        consumer.close()


def _seen_record(record: Any, names: Sequence[str]) -> Seen:
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    key: bytes | None = record.key()
    value: bytes | None = record.value()
    headers = kafka_to_nats_headers(record.headers() or [])
    return Seen(
        group=sys.intern(f"{topic}/{partition}"),
        position=offset,
        where=(),  # its pair key: topic, partition, offset
        digest=content_digest(key, value or b"", headers, names),
        pair_key=(topic, partition, offset),
    )


def copy_reader(
    stream: str, ranges: Sequence[PartitionRange], since: float, names: Sequence[str]
) -> Callable[[StreamMessage], Seen]:
    """Converts a stream message into Seen, paired with its record by its Kafka-* headers;
    in the window when its record is (a copy without them: when it was stored)."""
    bounds = {(r.topic, r.partition): r for r in ranges}

    def convert(msg: StreamMessage) -> Seen:
        where: Where = (("stream", stream), ("seq", msg.seq), ("subject", msg.subject))
        pair = _coordinates(msg)
        if pair is None:
            group, in_window = sys.intern(f"stream {stream}"), msg.time >= since
        else:
            topic, partition, offset = pair
            where += (("topic", topic), ("partition", partition), ("offset", offset))
            group = sys.intern(f"{topic}/{partition}")
            window = bounds.get((topic, partition))
            in_window = window is not None and window.start <= offset < window.end
        key = key_from_headers(msg.headers)
        return Seen(
            group=group,
            position=msg.seq,
            where=where,
            digest=content_digest(key, msg.payload, msg.headers, names),
            in_window=in_window,
            pair_key=pair,
        )

    return convert


def _coordinates(msg: StreamMessage) -> tuple[str, int, int] | None:
    try:
        topic = msg.headers[h.KAFKA_TOPIC][0]
        partition = int(msg.headers[h.KAFKA_PARTITION][0])
        offset = int(msg.headers[h.KAFKA_OFFSET][0])
    except (KeyError, IndexError, ValueError):
        return None
    return topic, partition, offset


def group_lag(connection: KafkaConnection, source: KafkaSource, group: str) -> int:
    """Records of the source's topics that `group` has not committed yet."""
    consumer = _consumer(connection, group)
    from confluent_kafka import KafkaException, TopicPartition  # _consumer checked

    try:
        topics = _topics(consumer, source)
        partitions = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        if not partitions:
            return 0
        committed = consumer.committed(partitions, timeout=TIMEOUT_S)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S, cached=False)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    except KafkaException as exc:
        raise RetryableError(f"kafka: reading consumer group {group!r} lag: {exc}") from None
    finally:
        consumer.close()


def _parts(context: LegacyContext) -> tuple[KafkaConnection, KafkaSource]:
    assert isinstance(context.connection, KafkaConnection)
    assert isinstance(context.source, KafkaSource)
    return context.connection, context.source


CONTEXT_S = 60.0  # the stream is read from this much before the window: late copies pair


async def collect(
    context: LegacyContext, since: float, read_stream: StreamReader
) -> tuple[list[Seen], list[Seen]]:
    """The topic's records from `since`, then the stream's copies (legacy first: every
    copy read has its original in what was read, or names an offset beyond it)."""
    connection, source = _parts(context)
    legacy, ranges = await asyncio.to_thread(
        read_window, connection, source, since, context.headers
    )
    convert = copy_reader(context.stream, ranges, since, context.headers)
    return legacy, await read_stream(since - CONTEXT_S, convert)


async def open_tap(context: LegacyContext) -> None:
    """Nothing to open: the topic keeps its records."""


async def close_tap(context: LegacyContext) -> None:
    """Nothing to close."""


async def lag(context: LegacyContext) -> tuple[int | None, str]:
    """The mirror's consumer group lag over the source's topics."""
    connection, source = _parts(context)
    group = source.group_id or f"natsbridge-{context.mirror_route}"
    return await asyncio.to_thread(group_lag, connection, source, group), f"consumer group {group}"


def drain_source(address: str, route: str) -> dict[str, Any]:
    """TOPIC: the topic from its earliest record, through the group natsbridge-<route>."""
    return {"topics": [address], "auto_offset_reset": "earliest"}


def drain_sink(address: str) -> dict[str, Any]:
    """TOPIC (the record key comes with the message)."""
    return {"topic": address}
