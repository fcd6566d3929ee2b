"""The one canonical message that flows through the pipeline.

Connectors convert their broker's native message to and from an Envelope; nothing
else knows a broker's native message type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

Headers = dict[str, list[str]]
"""Multi-valued string headers, NATS style: name -> values in arrival order."""


class Origin(Protocol):
    """Where a message came from, in its source's own coordinates.

    Each connector kind defines its own NamedTuple (bridge.kind): ``connection`` (the
    config's connection name), ``kind``, then its coordinates by name, each None when
    unknown. A NamedTuple: immutable, and a third of a frozen dataclass's cost to build
    (one per message for JetStream and Kafka sources).
    """

    @property
    def connection(self) -> str:
        """The name of the connection the message was read from."""

    @property
    def kind(self) -> str:
        """That connection's kind."""

    def _asdict(self) -> dict[str, Any]:
        """Every field by name: connection, kind, then the kind's coordinates."""


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
