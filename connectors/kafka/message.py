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
`mappings.kafka.nats_to_kafka_headers`, key = envelope.key, timestamp in milliseconds
when Kafka takes it (`record_timestamp_ms`), else the producer's clock.

Header names that are not UTF-8. The Kafka protocol defines a header name as a UTF-8
string, but brokers store whatever bytes a client sends. confluent-kafka decodes names
strictly and offers no raw access (and crashes on one: connectors.kafka.driver), so the
source hands such a record over as unreadable (`HeaderError`): the runtime dead-letters
it with its value, key and coordinates and commits past it. A sink never writes one
either: a record whose name is not UTF-8 would break every strict consumer downstream,
so that message is dead-lettered instead.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NamedTuple

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import HeaderError
from natsbridge.connectors.kafka.driver import record_headers
from natsbridge.connectors.kafka.kind import KafkaOrigin as Origin
from natsbridge.mappings.headers import KAFKA_HEADER_ORDER
from natsbridge.mappings.kafka import (
    coordinate_headers,
    kafka_to_nats_headers,
    nats_to_kafka_headers,
)


def envelope_from_record(record: Any, connection: str) -> Envelope:
    """The Envelope of a confluent-kafka Message read through `connection`."""
    topic: str = record.topic()
    partition: int = record.partition()
    offset: int = record.offset()
    key: bytes | None = record.key()
    raw_headers = record_headers(record)
    headers = (
        kafka_to_nats_headers([(name, value or b"") for name, value in raw_headers])
        if raw_headers
        else {}
    )
    coordinates = coordinate_headers(topic, partition, offset, key)
    order = headers.get(KAFKA_HEADER_ORDER)
    headers.update(coordinates)
    if order:
        # The order list must name every header for the sink to restore the record order:
        # the coordinates follow the record's own headers.
        names = [*json.loads(order[0]), *coordinates]
        headers[KAFKA_HEADER_ORDER] = [json.dumps(names, separators=(",", ":"))]
    kind, stamp = record.timestamp()
    timestamp = stamp / 1000 if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0 else time.time()
    value = record.value()
    return Envelope(
        subject=topic,
        payload=value if value is not None else b"",
        headers=headers,
        origin=Origin(connection, "kafka", topic=topic, partition=partition, offset=offset),
        timestamp=timestamp,
        key=key,
    )


def undecodable_record(record: Any, connection: str) -> Envelope:
    """The Envelope of a record whose headers cannot be converted: value, key, coordinates."""
    topic: str = record.topic()
    value, key = record.value(), record.key()
    partition, offset = record.partition(), record.offset()
    return Envelope(
        subject=topic,
        payload=value if isinstance(value, bytes) else b"",
        headers=coordinate_headers(topic, partition, offset),
        origin=Origin(connection, "kafka", topic=topic, partition=partition, offset=offset),
        key=key if isinstance(key, bytes) else None,
    )


def _kafka_name(name: str) -> str:
    """`name` as a Kafka header name; HeaderError unless it is UTF-8 text (module doc)."""
    if name.isascii():
        return name
    try:
        str.encode(name)  # str's own: a name as read may override encode()
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "backslashreplace").decode()
        raise HeaderError(
            f"kafka: header name {shown!r} is not UTF-8 text, which Kafka header names are"
        ) from None
    return name


MAX_FUTURE_MS = 60_000
"""How far ahead of this host's clock a source timestamp may be to become the record's."""


def record_timestamp_ms(timestamp: float, now: float) -> int | None:
    """The record timestamp for a source timestamp (seconds), or None for the producer's clock.

    Kafka refuses what does not fit: a timestamp outside int64 milliseconds cannot be
    written, a negative one is not a time, and a broker refuses one too far ahead
    (``message.timestamp.after.max.ms``, one hour by default since Kafka 4.0), which
    also costs an idempotent producer its sequence for the partition. The original stays
    in the header that carried it (``Amqp-Timestamp``, STOMP ``timestamp``).
    """
    if not math.isfinite(timestamp) or timestamp < 0:
        return None
    ms = int(timestamp * 1000)
    return ms if ms <= now * 1000 + MAX_FUTURE_MS else None


class Record(NamedTuple):
    """What Producer.produce() takes for one envelope."""

    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None


def record_from_envelope(envelope: Envelope) -> Record:
    """The record for `envelope`; raises HeaderError for a header Kafka cannot carry."""
    headers = nats_to_kafka_headers(envelope.headers) if envelope.headers else []
    return Record(
        topic=envelope.subject,
        value=envelope.payload,
        key=envelope.key,
        headers=[(_kafka_name(name), value) for name, value in headers],
        timestamp_ms=record_timestamp_ms(envelope.timestamp, time.time()),
    )
