"""Kafka topics, keys, coordinates and record headers, to NATS and back.

Topics
    `validate_topic` applies Kafka's rules: 1 to 249 characters from ``[a-zA-Z0-9._-]``,
    and not ``.`` or ``..``. Kafka topics use ``.`` for hierarchy, so
    `topic_to_subject` keeps dots as token separators (``clicks.v2`` → ``clicks.v2``)
    and escapes what NATS cannot hold (an empty word: ``a..b`` → ``a.%.b``, ``.a`` →
    ``%.a``); `topic_to_token` makes the whole topic a single token instead (``.`` →
    ``%2E``). Both are reversible (mappings.escaping) and their inverses re-validate
    the topic.

Coordinates
    `coordinate_headers` gives ``Kafka-Topic``, ``Kafka-Partition``, ``Kafka-Offset``
    (decimal) and ``Kafka-Key`` (only when there is a key), the key encoded with
    `mappings.headers.encode_value`: as text when it is plain UTF-8, else ``base64:`` and
    the bytes. `key_from_headers` reads the key back.

Record headers (`kafka_to_nats_headers`, `nats_to_kafka_headers`)
    Kafka headers are an ordered list of (name, bytes) with repeated names allowed.
    Each becomes a value of the NATS header of the same name (through
    `mappings.headers.foreign_header_name`: escaped when NATS cannot carry it, first
    character escaped for a reserved ``Nats-*`` / ``Bridge-*`` name), values in record
    order, each encoded with `encode_value`. Grouping by name loses the order when names
    are interleaved (``a, b, a``); only then a ``Kafka-Header-Order`` header holds the JSON
    list of names in record order. A Kafka header that is itself named
    ``Kafka-Header-Order`` gets its first character escaped. The reverse gives the exact
    original list. A null header value (None) comes back as ``b""``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import MappingError
from natsbridge.mappings import headers as h
from natsbridge.mappings.escaping import escape_token, escape_words, unescape_token, unescape_words

MAX_TOPIC_LENGTH = 249
"""Kafka's limit on topic name length."""

_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def validate_topic(topic: str) -> None:
    """Raise MappingError unless `topic` is a legal Kafka topic name."""
    if _TOPIC.fullmatch(topic) is not None and topic not in (".", ".."):
        return
    if topic in ("", ".", ".."):
        raise MappingError(f"{topic!r} is not a legal Kafka topic name")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise MappingError(
            f"Kafka topic name of {len(topic)} characters is over the {MAX_TOPIC_LENGTH} limit"
        )
    bad = re.search(r"[^a-zA-Z0-9._-]", topic)
    assert bad is not None
    raise MappingError(
        f"character {bad.group()!r} at offset {bad.start()} in Kafka topic {topic!r}: "
        "topics hold only ASCII letters, digits, '.', '_' and '-'"
    )


def topic_to_subject(topic: str) -> str:
    """The NATS subject tokens for `topic`, its dots kept as separators."""
    validate_topic(topic)
    return escape_words(topic)


def subject_to_topic(subject: str) -> str:
    """The topic that `topic_to_subject` turned into `subject`."""
    topic = unescape_words(subject)
    validate_topic(topic)
    return topic


def topic_to_token(topic: str) -> str:
    """`topic` as a single NATS token (``.`` → ``%2E``)."""
    validate_topic(topic)
    return escape_token(topic)


def token_to_topic(token: str) -> str:
    """The topic that `topic_to_token` turned into `token`."""
    topic = unescape_token(token)
    validate_topic(topic)
    return topic


def coordinate_headers(
    topic: str, partition: int, offset: int, key: bytes | None = None
) -> Headers:
    """The ``Kafka-*`` source-coordinate headers of a record."""
    out: Headers = {
        h.KAFKA_TOPIC: [topic],
        h.KAFKA_PARTITION: [str(partition)],
        h.KAFKA_OFFSET: [str(offset)],
    }
    if key is not None:
        out[h.KAFKA_KEY] = [h.encode_value(key)]
    return out


def key_from_headers(headers: Mapping[str, Sequence[str]]) -> bytes | None:
    """The record key carried in ``Kafka-Key``, or None."""
    values = headers.get(h.KAFKA_KEY)
    return h.decode_value(values[0]) if values else None


_TAKEN = frozenset({h.KAFKA_HEADER_ORDER.lower()})


def _nats_name(name: str) -> str:
    nats_name = _NATS_NAMES.get(name)
    if nats_name is None:
        nats_name = h.foreign_header_name(name, _TAKEN)
        if len(_NATS_NAMES) >= _NATS_NAMES_MAX:
            _NATS_NAMES.clear()
        _NATS_NAMES[name] = nats_name
    return nats_name


_NATS_NAMES: dict[str, str] = {}
"""Kafka header names seen before, with their NATS names: producers send the same few."""
_NATS_NAMES_MAX = 4096  # bounded: header names can come from untrusted producers


def kafka_to_nats_headers(headers: Sequence[tuple[str, bytes | None]]) -> Headers:
    """NATS headers for a record's header list (see module doc)."""
    out: Headers = {}
    order: list[str] = []
    interleaved = False
    for name, value in headers:
        nats_name = _nats_name(name)
        values = out.get(nats_name)
        if values is None:
            values = out[nats_name] = []
        elif order[-1] != nats_name:
            interleaved = True
        values.append(h.encode_value(b"" if value is None else value))
        order.append(nats_name)
    if interleaved:
        out[h.KAFKA_HEADER_ORDER] = [json.dumps(order, separators=(",", ":"))]
    return out


def nats_to_kafka_headers(headers: Mapping[str, Sequence[str]]) -> list[tuple[str, bytes]]:
    """A record's header list for NATS `headers` (the inverse of `kafka_to_nats_headers`)."""
    order = _order(headers)
    if order is None:
        return [
            (h.unescape_header_name(name), h.decode_value(value))
            for name, values in headers.items()
            if name != h.KAFKA_HEADER_ORDER
            for value in values
        ]
    cursors = dict.fromkeys(headers, 0)
    out: list[tuple[str, bytes]] = []
    for name in order:
        i = cursors[name]
        out.append((h.unescape_header_name(name), h.decode_value(headers[name][i])))
        cursors[name] = i + 1
    return out


def _order(headers: Mapping[str, Sequence[str]]) -> list[str] | None:
    """The record order from ``Kafka-Header-Order`` if present and consistent, else None."""
    values = headers.get(h.KAFKA_HEADER_ORDER)
    if not values:
        return None
    try:
        order = json.loads(values[0])
    except ValueError:
        return None
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        return None
    counts: dict[str, int] = {}
    for name in order:
        counts[name] = counts.get(name, 0) + 1
    expected = {n: len(v) for n, v in headers.items() if n != h.KAFKA_HEADER_ORDER}
    return order if counts == expected else None
