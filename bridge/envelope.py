"""The one canonical message that flows through the pipeline.

Connectors convert their broker's native message to and from an Envelope; nothing
else knows a broker's native message type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

Headers = dict[str, list[str]]
"""Multi-valued string headers, NATS style: name -> values in arrival order."""


class Origin(NamedTuple):
    """Where a message came from, in its source broker's own coordinates.

    A NamedTuple: immutable like a frozen dataclass, and a third of its cost to build
    (one per message for JetStream and Kafka sources).
    """

    connection: str
    kind: str  # "amqp" | "kafka" | "stomp" | "nats"
    subject: str | None = None  # NATS subject
    exchange: str | None = None  # AMQP
    routing_key: str | None = None  # AMQP
    queue: str | None = None  # AMQP queue the message was consumed from
    topic: str | None = None  # Kafka
    partition: int | None = None  # Kafka
    offset: int | None = None  # Kafka
    destination: str | None = None  # STOMP destination as received, with its prefix
    stream_seq: int | None = None  # JetStream stream sequence


@dataclass(slots=True)
class Envelope:
    """A message in flight: address, payload, headers and where it came from.

    `subject` is the address on the side the envelope is headed to: a source sets
    it to its native address and the route's mapping replaces it with the rendered
    target address (a NATS subject, routing key, Kafka topic or STOMP destination).
    """

    subject: str
    payload: bytes
    headers: Headers = field(default_factory=dict)
    reply: str | None = None
    msg_id: str | None = None
    origin: Origin | None = None
    timestamp: float = field(default_factory=time.time)
    key: bytes | None = None

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-sensitive, as NATS), or None."""
        values = self.headers.get(name)
        return values[0] if values else None
