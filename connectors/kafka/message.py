"""A Kafka record to an Envelope and back; the header and key encodings are mappings.kafka's.

Source side (`envelope_from_record`): subject = topic, payload = value (a null value, a
tombstone, becomes ``b""``), key = the record key's bytes as they are (UTF-8 or not),
timestamp = the record's (seconds), headers = the record headers through
`mappings.kafka.kafka_to_nats_headers` (repeated names kept, their order too) plus the
coordinate headers ``Kafka-Topic``, ``Kafka-Partition``, ``Kafka-Offset`` and ``Kafka-Key``
(`mappings.kafka.coordinate_headers`), which replace record headers of the same name
(when the record's header order is kept in ``Kafka-Header-Order``, the coordinates are
listed after the record's own headers, so a Kafka sink writes them back in that order);
origin = Origin(connection, "kafka", topic, partition, offset).

Sink side (`record_from_envelope`): the inverse: headers through
`mappings.kafka.nats_to_kafka_headers`, key = envelope.key, timestamp in milliseconds.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from bridge.envelope import Envelope, Origin
from mappings.headers import KAFKA_HEADER_ORDER
from mappings.kafka import coordinate_headers, kafka_to_nats_headers, nats_to_kafka_headers


def envelope_from_record(record: Any, connection: str) -> Envelope:
    """The Envelope of a kafka-python ConsumerRecord read through `connection`."""
    topic: str = record.topic
    partition: int = record.partition
    offset: int = record.offset
    key: bytes | None = record.key
    headers = kafka_to_nats_headers(record.headers) if record.headers else {}
    coordinates = coordinate_headers(topic, partition, offset, key)
    order = headers.get(KAFKA_HEADER_ORDER)
    headers.update(coordinates)
    if order:
        # The order list must name every header for the sink to restore the record order:
        # the coordinates follow the record's own headers.
        names = [*json.loads(order[0]), *coordinates]
        headers[KAFKA_HEADER_ORDER] = [json.dumps(names, separators=(",", ":"))]
    timestamp = (
        record.timestamp / 1000
        if record.timestamp is not None and record.timestamp >= 0
        else time.time()
    )
    return Envelope(
        subject=topic,
        payload=record.value if record.value is not None else b"",
        headers=headers,
        origin=Origin(connection, "kafka", topic=topic, partition=partition, offset=offset),
        timestamp=timestamp,
        key=key,
    )


def undecodable_record(record: Any, connection: str) -> Envelope:
    """The Envelope of a record whose headers cannot be converted: value, key, coordinates."""
    topic: str = record.topic
    value = record.value
    return Envelope(
        subject=topic,
        payload=value if isinstance(value, bytes) else b"",
        headers=coordinate_headers(topic, record.partition, record.offset),
        origin=Origin(
            connection, "kafka", topic=topic, partition=record.partition, offset=record.offset
        ),
        key=record.key if isinstance(record.key, bytes) else None,
    )


class Record(NamedTuple):
    """What KafkaProducer.send() takes for one envelope."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def record_from_envelope(envelope: Envelope) -> Record:
    """The record for `envelope`; raises HeaderError for a malformed encoded header value."""
    headers = nats_to_kafka_headers(envelope.headers) if envelope.headers else []
    return Record(
        topic=envelope.subject,
        value=envelope.payload,
        key=envelope.key,
        headers=headers,
        timestamp_ms=int(envelope.timestamp * 1000),
    )
