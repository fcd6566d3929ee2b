"""Stream and consumer configuration, and the small records the broker hands back.

Configs are frozen dataclasses, validated on construction and stored as JSON in the
database, so `sqlite3 buffer.db "select name, config from streams"` shows them as written.
Units are in the field names' comments: seconds for durations, bytes for sizes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from natsbridge.bridge.envelope import Headers
from natsbridge.mappings.subjects import validate_pattern

DEFAULT_MAX_MSG_SIZE = 1024 * 1024
"""Largest payload a stream accepts by default, in bytes (nats-server's max_payload)."""
DEFAULT_DUPLICATE_WINDOW_S = 120.0
"""JetStream's default duplicate window, in seconds."""
DEFAULT_ACK_WAIT_S = 30.0
"""How long a delivered message may stay unacknowledged before redelivery, in seconds."""
DEFAULT_MAX_ACK_PENDING = 10_000
"""Delivered-but-unacknowledged messages a consumer allows by default."""

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")


def validate_name(name: str, what: str) -> None:
    """Raise ValueError unless `name` is a usable stream or consumer name."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid {what} name {name!r}: use 1 to 255 letters, digits, '_', '-' or '.'"
        )


class Retention(StrEnum):
    """When a stream deletes a message."""

    LIMITS = "limits"  # only when a limit (max_msgs, max_bytes, max_age) says so
    WORKQUEUE = "workqueue"  # as soon as its consumer acks it (or limits say so)


class Discard(StrEnum):
    """What a stream does when an append would exceed max_msgs or max_bytes."""

    OLD = "old"  # delete the oldest messages to make room
    NEW = "new"  # refuse the append with StreamFull
    # Refuse appends with StreamFull once the stream is at a limit, and never delete by
    # limits: its writers wait. A batch that starts below the limits goes in whole, so a
    # batch larger than the room left can never be refused for ever.
    HOLD = "hold"


class Synchronous(StrEnum):
    """SQLite's `synchronous` setting: FULL is the only durable one (NORMAL/OFF: benchmarks)."""

    FULL = "FULL"
    NORMAL = "NORMAL"
    OFF = "OFF"


def _finite(value: float, what: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """A stream: a named, ordered, durable log of messages with limits.

    `subjects` are NATS patterns the stream takes messages for when publishing by
    subject (`Broker.stream_for`); a stream without subjects takes any subject string
    (for example a rendered AMQP routing key) published to it by name. A limit of 0
    means unlimited. `dead_letter` names the stream that receives this stream's dead
    letters (created with default limits when missing).
    """

    name: str
    subjects: tuple[str, ...] = ()
    retention: Retention = Retention.LIMITS
    max_msgs: int = 0
    max_bytes: int = 0  # subject + headers + payload, summed over stored messages
    max_age: float = 0.0  # seconds
    max_msg_size: int = DEFAULT_MAX_MSG_SIZE  # payload bytes
    discard: Discard = Discard.OLD
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW_S  # seconds; 0 disables dedup
    dead_letter: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.name, "stream")
        object.__setattr__(self, "subjects", tuple(self.subjects))
        object.__setattr__(self, "retention", Retention(self.retention))
        object.__setattr__(self, "discard", Discard(self.discard))
        for pattern in self.subjects:
            validate_pattern(pattern)
        for attr in ("max_msgs", "max_bytes", "max_msg_size"):
            if getattr(self, attr) < 0:
                raise ValueError(f"stream {self.name!r}: {attr} must be >= 0 (0 = unlimited)")
        _finite(self.max_age, f"stream {self.name!r}: max_age")
        _finite(self.duplicate_window, f"stream {self.name!r}: duplicate_window")
        if self.dead_letter is not None:
            validate_name(self.dead_letter, "dead-letter stream")
            if self.dead_letter == self.name:
                raise ValueError(f"stream {self.name!r} cannot be its own dead-letter stream")

    def to_json(self) -> str:
        """The config as stored in the database."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StreamConfig:
        """Inverse of to_json."""
        data: dict[str, Any] = json.loads(text)
        data["subjects"] = tuple(data.get("subjects", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """A durable pull consumer of one stream.

    Each delivery of a message must be acked within its ack wait or it is delivered
    again: `backoff[n-1]` is the wait after the n-th delivery (its last entry repeats),
    else `ack_wait`. After `max_deliver` deliveries (0 = no limit) a message that is not
    acked goes to the stream's dead-letter stream. `ordered` allows one message in
    flight at a time, so messages are processed strictly in stream order.
    `filter_subject` (a NATS pattern) restricts the consumer to matching subjects.
    """

    name: str
    filter_subject: str | None = None
    ack_wait: float = DEFAULT_ACK_WAIT_S  # seconds
    backoff: tuple[float, ...] = ()  # seconds, per delivery count
    max_deliver: int = 0
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING  # 0 = no limit
    ordered: bool = False

    def __post_init__(self) -> None:
        validate_name(self.name, "consumer")
        object.__setattr__(self, "backoff", tuple(float(b) for b in self.backoff))
        if self.filter_subject is not None:
            validate_pattern(self.filter_subject)
        _finite(self.ack_wait, f"consumer {self.name!r}: ack_wait")
        if self.ack_wait == 0:
            raise ValueError(f"consumer {self.name!r}: ack_wait must be > 0")
        for value in self.backoff:
            _finite(value, f"consumer {self.name!r}: backoff")
        if self.max_deliver < 0 or self.max_ack_pending < 0:
            raise ValueError(f"consumer {self.name!r}: max_deliver and max_ack_pending are >= 0")

    def wait_after(self, deliveries: int) -> float:
        """Seconds to wait for an ack after the `deliveries`-th delivery."""
        if self.backoff:
            return self.backoff[min(deliveries, len(self.backoff)) - 1]
        return self.ack_wait

    @property
    def in_flight_limit(self) -> int:
        """Most messages delivered and not yet acked at once (0 = no limit)."""
        return 1 if self.ordered else self.max_ack_pending

    def to_json(self) -> str:
        """The config as stored in the database."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ConsumerConfig:
        """Inverse of to_json."""
        data: dict[str, Any] = json.loads(text)
        data["backoff"] = tuple(data.get("backoff", ()))
        return cls(**data)


class PubAck(NamedTuple):
    """A durable append: the message's sequence, or the earlier one it duplicates."""

    stream: str
    seq: int
    duplicate: bool = False


class Outgoing(NamedTuple):
    """One message for `publish_many`."""

    subject: str
    payload: bytes
    headers: Headers | None = None
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored, read back by sequence (operator views, dead letters)."""

    stream: str
    seq: int
    subject: str
    payload: bytes
    headers: Headers
    msg_id: str | None
    time: float  # unix seconds at append


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """A consumer's position and counters.

    `num_pending`: matching messages not yet delivered; `num_ack_pending`: delivered
    and not yet acked; `ack_floor`: every sequence at or below it is done with;
    `oldest_age`: seconds since the oldest message not yet acked was appended.
    """

    stream: str
    name: str
    config: ConsumerConfig
    delivered: int
    ack_floor: int
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    num_dead_lettered: int
    oldest_age: float | None
    created: float  # unix seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's contents and its consumers.

    `first_seq`/`last_seq` follow JetStream: an empty stream has first_seq = last_seq + 1.
    `oldest_age`: seconds since the oldest stored message was appended.
    """

    config: StreamConfig
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    oldest_age: float | None
    created: float  # unix seconds
    consumers: tuple[ConsumerInfo, ...] = field(default=())

    @property
    def name(self) -> str:
        """The stream's name."""
        return self.config.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)
