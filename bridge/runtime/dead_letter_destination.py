"""Dead letters written to a destination on any connection: a route's `dead_letters:`.

The Kafka Connect `errors.deadletterqueue` idea: a route may send what it cannot deliver
or map to a JetStream stream, a Kafka topic, a RabbitMQ exchange (any kind's `to`)
instead of its local buffer's dead-letter stream, where a central team sees them. Each
dead letter carries, as headers every kind's header mapping passes on:

    Natsbridge-Dlq-Reason     the error, as `Bridge-Reason` says it locally
    Natsbridge-Dlq-Route      the route's name
    Natsbridge-Dlq-Stage      intake (never buffered: a replay maps it again) or delivery
    Natsbridge-Dlq-Source     where it came from (the source's coordinates)
    Natsbridge-Dlq-Failed-At  when it first failed (ISO 8601, UTC)
    Natsbridge-Dlq-Subject    the address it had (a replay puts it back there)

`DestinationDeadLetters` wraps the route's buffer: everything but `dead_letter` goes to
the buffer. A dead letter is settled in the buffer (or acked at its source, by the
caller) only once the destination confirmed it; when the destination fails, it raises
DeadLetterUnavailable (a StoreError): the route holds its source back and retries, and
the route's last error says why. Nothing is lost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import Sink
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import StoreError
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.buffer import Backlog, Buffered, RouteBuffer
from natsbridge.bridge.runtime.dead_letters import origin_text, reason_of, source_coordinates

DLQ_REASON = "Natsbridge-Dlq-Reason"
DLQ_ROUTE = "Natsbridge-Dlq-Route"
DLQ_STAGE = "Natsbridge-Dlq-Stage"
DLQ_SOURCE = "Natsbridge-Dlq-Source"
DLQ_FAILED_AT = "Natsbridge-Dlq-Failed-At"
DLQ_SUBJECT = "Natsbridge-Dlq-Subject"
DLQ_HEADERS = (DLQ_REASON, DLQ_ROUTE, DLQ_STAGE, DLQ_SOURCE, DLQ_FAILED_AT, DLQ_SUBJECT)
INTAKE = "intake"
DELIVERY = "delivery"


class DeadLetterUnavailable(StoreError):
    """The dead-letter destination refused or could not be reached: the message waits."""


class DestinationDeadLetters:
    """A route's buffer whose dead letters go to the route's `dead_letters:` destination."""

    def __init__(self, buffer: RouteBuffer, route: Route, make_sink: Callable[[], Sink]) -> None:
        assert route.dead_letters is not None
        self.buffer = buffer
        self.route = route
        self.target = route.dead_letters
        self.make_sink = make_sink  # a fresh one after a failure: closed ones stay closed
        self.sink: Sink | None = None
        kind = load_connector(self.target.sink_kind)
        self.address = self.target.templates[kind.sink_templates[0]]
        self.key = self.target.templates.get("key")
        self.failed_at: dict[int, float] = {}  # id(envelope) -> first failure, while retried

    def where(self) -> str:
        """The destination, for messages: its connection and its `to`."""
        written = self.target.sink.model_dump(exclude_none=True, exclude={"connection"})
        return f"connection {self.target.sink.connection!r} {written}"

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        await self.buffer.put(envelopes)

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        return await self.buffer.take(max_messages, timeout)

    async def settle(self, seqs: Sequence[int]) -> None:
        await self.buffer.settle(seqs)

    async def backlog(self) -> Backlog:
        return await self.buffer.backlog()

    def release(self) -> None:
        self.buffer.release()

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        """Write `envelope` to the destination; then settle buffered message `seq`, if any."""
        failed_at = self.failed_at.setdefault(id(envelope), time.time())
        try:
            letter = self.letter(envelope, reason, seq is None, failed_at)
            if self.sink is None:
                self.sink = self.make_sink()
                await self.sink.connect()
            [result] = await self.sink.send_batch([letter])
        except Exception as exc:  # rendering, connecting: the message waits either way
            result = exc
        if result is not None:
            await self._disconnect()
            held = "un-acked at its source" if seq is None else "in the buffer"
            raise DeadLetterUnavailable(
                f"dead letters cannot be written to {self.where()}: {reason_of(result)} "
                f"(the message stays {held})"
            )
        del self.failed_at[id(envelope)]
        if seq is not None:
            await self.buffer.settle([seq])

    def letter(self, envelope: Envelope, reason: str, intake: bool, failed_at: float) -> Envelope:
        """The dead letter: `envelope` at the destination's address, with the DLQ headers."""
        headers = {name: list(values) for name, values in envelope.headers.items()}
        headers[DLQ_REASON] = [reason]
        headers[DLQ_ROUTE] = [self.route.name]
        headers[DLQ_STAGE] = [INTAKE if intake else DELIVERY]
        headers[DLQ_SOURCE] = [source_text(envelope)]
        headers[DLQ_FAILED_AT] = [datetime.fromtimestamp(failed_at, UTC).isoformat()]
        headers[DLQ_SUBJECT] = [envelope.subject]
        key = envelope.key
        if self.key is not None:
            key = self.key.render(envelope).encode("utf-8", "surrogateescape")
        return Envelope(
            subject=self.address.render(envelope),
            payload=envelope.payload,
            headers=headers,
            timestamp=envelope.timestamp,
            key=key,
        )

    async def close(self) -> None:
        """Close the destination's connection."""
        await self._disconnect()

    async def _disconnect(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            with contextlib.suppress(Exception):  # a new one for the next dead letter
                await sink.close()


def source_text(envelope: Envelope) -> str:
    """Where a message came from: its Origin, else the source coordinates its headers keep."""
    if envelope.origin is not None:
        return origin_text(envelope)
    found = [
        f"{name} {value}"
        for name in source_coordinates()
        if (value := envelope.header(name)) is not None
    ]
    return ", ".join(found) or f"subject {envelope.subject!r}"
