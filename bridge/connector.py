"""The connector contract: what a source and a sink promise, and what the runtime does around them.

A connector is a plugin for one broker kind (`amqp`, `kafka`, `stomp`, `nats`). It turns
the broker's native messages into `Envelope`s and back; nothing else in natsbridge knows
a broker's message type or imports its client library. Blocking client libraries run on
a thread of their own and cross into the event loop through bridge.threads (batched
`call_soon_threadsafe`); no connector method blocks the event loop.

Errors crossing this boundary are the project's own (bridge.errors): `RetryableError`
(connection lost, timeout: the runtime reconnects and retries with back-off) or
`PermanentError` (this message can never succeed: the runtime dead-letters it). A
driver exception must be translated at the boundary, never leak.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import MappingError, PermanentError

Ack = Callable[[BaseException | None], None]
"""Settles one received message: `ack(None)` acknowledges it; `ack(error)` gives it back.

A RetryableError asks the broker to redeliver it (AMQP requeue, JetStream nak, STOMP
NACK, Kafka: no commit); a PermanentError rejects it for good (AMQP reject without
requeue, JetStream term). The call never blocks and is thread-safe; a second call is a
no-op, so settling twice is harmless.
"""


class AckOnce:
    """An `Ack` that passes the first call on to `settle` and ignores every later one.

    Connectors build each message's ack as `AckOnce(partial(self._settle, ...))`, so
    that "settling twice is harmless" is decided here, once, for every broker.
    """

    __slots__ = ("_done", "_settle")

    def __init__(self, settle: Callable[[BaseException | None], None]) -> None:
        self._settle = settle
        self._done = False

    def __call__(self, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._settle(error)


@dataclass(slots=True)
class Incoming:
    """A message received from a source, with the callable that settles it.

    `error` is set when the source could not convert the native message completely:
    `envelope` then holds the raw payload and whatever could be decoded, and the
    runtime dead-letters it with that reason and acks it. A source never rejects such a
    message to its broker, where it might vanish (a queue without a dead-letter exchange).
    """

    envelope: Envelope
    ack: Ack
    error: BaseException | None = None


def unreadable(envelope: Envelope, ack: Ack, error: Exception, kind: str) -> Incoming:
    """The Incoming of a message a `kind` source could not convert (`error` says why).

    `envelope` holds what could be read (payload, coordinates). Every source builds it
    here, so that the reason is the same kind of error whichever broker it came from: a
    PermanentError as raised, anything else (a bug, a library's surprise) a MappingError.
    """
    if not isinstance(error, PermanentError):
        error = MappingError(f"{kind}: cannot read the message: {type(error).__name__}: {error}")
    return Incoming(envelope, ack, error)


@runtime_checkable
class Source(Protocol):
    """Reads messages from a broker; each must be settled through its `ack`."""

    async def connect(self) -> None:
        """Connect and start consuming (declaring/binding what the route asks for).

        Raises RetryableError when the broker is unreachable (the runtime retries with
        back-off) and PermanentError when the route cannot work (for example a topic
        that does not exist and must not be created). Called again after ConnectionLost.
        """

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` messages, waiting at most `timeout` seconds for the first.

        Returns an empty sequence on timeout. Raises ConnectionLost when the connection
        broke: unsettled messages will be redelivered by the broker, and the runtime
        calls `connect()` again. Messages arrive in broker order per queue/partition.
        """

    async def close(self) -> None:
        """Stop consuming and disconnect; settles already-acked messages first. Idempotent."""


@runtime_checkable
class Sink(Protocol):
    """Writes messages to a broker and reports when the broker has confirmed each."""

    async def connect(self) -> None:
        """Connect (declaring what the route asks for); errors as for Source.connect."""

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish `envelopes` in order; return once the broker has settled every one.

        The result has one entry per envelope: None where the broker confirmed it
        durable, else the error (RetryableError: connection lost, timeout; or
        PermanentError: rejected, unroutable, too large). Several batches may be in
        flight at once; messages go out in call order. `envelope.subject` is the
        rendered target address. A batch, not one call per message, so that a window
        of messages costs the event loop one wait and not one task each.
        """

    async def close(self) -> None:
        """Wait for outstanding confirms (bounded), then disconnect. Idempotent."""


async def send_one(sink: Sink, envelope: Envelope) -> None:
    """Send one message through `sink.send_batch`; raise its error if it was not confirmed."""
    (error,) = await sink.send_batch([envelope])
    if error is not None:
        raise error


@runtime_checkable
class Requester(Protocol):
    """A sink that can carry a request and wait for its answer (request/reply routes)."""

    async def request(self, envelope: Envelope, timeout: float) -> Envelope:
        """Send `envelope` as a request; return the reply. Raises BridgeTimeout."""


@runtime_checkable
class Responder(Protocol):
    """A source whose messages can carry a reply address (request/reply routes)."""

    async def respond(self, request: Envelope, reply: Envelope) -> None:
        """Publish `reply` to the reply address of `request`."""
