"""What a route needs from its durable buffer, whichever backend holds it.

The embedded broker (bridge.broker, SQLite on local disk; bridge.runtime.embedded) is
the default backend; a stream in a JetStream cluster (`buffer: jetstream`, offered by a
kind that `holds_buffers`: connectors.nats.buffer) can take its place. A route's buffer
holds the mapped envelopes between the source's ack and the sink's confirm, and its
dead letters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from natsbridge.bridge.envelope import Envelope

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route


@dataclass(slots=True)
class Buffered:
    """A buffered message handed out for delivery."""

    seq: int
    envelope: Envelope
    deliveries: int  # 1 on first delivery, more after a restart or a redelivery
    buffered_at: float = 0.0  # Unix seconds of the append to the buffer


@dataclass(frozen=True, slots=True)
class Backlog:
    """Messages in the buffer not yet confirmed by the destination."""

    depth: int
    oldest_age: float | None  # seconds since the oldest was buffered; None when empty
    bytes: int = 0  # stored size of the route's buffer (0 when the backend cannot tell)


class RouteBuffer(Protocol):
    """One route's durable buffer and dead-letter stream."""

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        """Store `envelopes` in order; returns only once they are durable on disk.

        Raises StreamFull when the buffer's limits are reached (the caller waits and
        retries, leaving the messages unacknowledged at the source) or StoreError.
        """

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        """Up to `max_messages` undelivered messages in order, waiting up to `timeout`."""

    async def settle(self, seqs: Sequence[int]) -> None:
        """Mark messages delivered: they never come back, even after a crash."""

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        """Move a message to the dead-letter stream with `reason` (durable on return).

        With `seq`, the buffered message of that sequence is moved; without, `envelope`
        (one that never reached the buffer, for example because it could not be mapped)
        is written to the dead-letter stream directly.
        """

    async def backlog(self) -> Backlog:
        """How many messages wait for delivery, and how old the oldest is."""

    def release(self) -> None:
        """Hand back every message taken and not settled, to be delivered again at once.

        For a route stopped before its sends were settled (a reload's drain timed out),
        so that the route started in its place need not wait for the ack wait.
        """


class Buffers(Protocol):
    """A buffer backend: opened once, it hands each route that uses it its buffer."""

    async def open(self) -> None:
        """Connect or open the store; StoreError with the cause when it cannot."""

    async def route(self, route: Route) -> RouteBuffer:
        """The buffer of `route`, created on first use and kept across restarts."""

    async def close(self) -> None:
        """Make what is pending durable and let go of the store."""
