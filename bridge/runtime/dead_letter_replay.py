"""Replay a route's `dead_letters:` destination (a JetStream stream, a Kafka topic) back
into the route while the bridge runs: `natsbridge dlq replay ROUTE --destination`.

The destination's kind says how to read back what it wrote (`ConnectorKind.reads_back`,
with a consumer named after the route, so a replay goes on where the last one stopped).
Each dead letter loses its Natsbridge-Dlq-* headers; an intake one (the source's
message) is mapped again by the route, a delivery one goes back to the address it had
(`Natsbridge-Dlq-Subject`); then it is buffered, and only then acked at the destination.
A dead letter that cannot be mapped stops the replay there, un-acked, with the reason;
so does one written after the replay began (it failed again: no loop).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from natsbridge.bridge.config.loader import Config, Route
from natsbridge.bridge.connector import Incoming, Source
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.dead_letter_destination import (
    DLQ_FAILED_AT,
    DLQ_HEADERS,
    DLQ_STAGE,
    DLQ_SUBJECT,
    INTAKE,
)
from natsbridge.bridge.runtime.dead_letters import reason_of
from natsbridge.bridge.runtime.route import RouteRunner

RECEIVE_TIMEOUT_S = 1.0
IDLE_ROUNDS = 3  # empty receives in a row that end a replay: the destination is read
BATCH = 100


def replay_reader(route: Route, config: Config) -> Source:
    """A source reading `route`'s dead-letter destination back; BridgeError if it cannot."""
    target = route.dead_letters
    if target is None:
        raise BridgeError(f"route {route.name!r} has no dead_letters: destination to replay from")
    kind = load_connector(target.sink_kind)
    name = f"natsbridge-dlq-{route.name}".replace(".", "_")
    fields = kind.reads_back(target.sink, name)
    if not fields or kind.source_model is None:
        raise BridgeError(
            f"route {route.name!r}: its dead_letters destination ({kind.name} "
            f"{kind.describe_sink(target.sink)}) cannot be read back by the bridge: "
            "read the dead letters where that destination routes them"
        )
    source = kind.source_model.model_validate({"connection": target.sink.connection, **fields})
    spec = route.spec.model_copy(update={"name": f"{route.name}.dlq-replay"})
    reading = replace(target, spec=spec, source=source, source_kind=kind.name)
    connection = config.connections[target.sink.connection]
    return kind.source(reading, connection, config.bridge)


async def replay_destination(runner: RouteRunner, source: Source, limit: int) -> dict[str, Any]:
    """Move up to `limit` dead letters from `source` into `runner`'s buffer.

    It ends at the first dead letter written after it began: one that failed again
    while replayed waits for the next replay, instead of going round in a loop.
    """
    buffer = runner.buffer
    if buffer is None:
        raise BridgeError(f"route {runner.route.name!r} has no buffer now (at_most_once)")
    began = datetime.now(UTC)
    replayed, idle = 0, 0
    stopped: str | None = None
    await source.connect()
    try:
        while replayed < limit and idle < IDLE_ROUNDS and stopped is None:
            batch = await source.receive(min(BATCH, limit - replayed), RECEIVE_TIMEOUT_S)
            idle = 0 if batch else idle + 1
            ready: list[tuple[Incoming, Envelope]] = []
            for incoming in batch:
                if _failed_at(incoming.envelope) >= began:
                    idle = IDLE_ROUNDS  # the rest is newer still
                    break
                try:
                    ready.append((incoming, _restored(runner, incoming)))
                except Exception as exc:  # this one waits at the destination, and so do the rest
                    stopped = reason_of(exc)
                    break
            if ready:
                await buffer.put([envelope for _, envelope in ready])
                for incoming, _ in ready:
                    incoming.ack(None)
                replayed += len(ready)
    finally:
        await source.close()
    answer: dict[str, Any] = {"route": runner.route.name, "replayed": replayed}
    if stopped is not None:
        answer["stopped"] = stopped
    return answer


def _failed_at(letter: Envelope) -> datetime:
    """When a dead letter was written (a letter without the header counts as old)."""
    written = letter.header(DLQ_FAILED_AT)
    try:
        return datetime.fromisoformat(written) if written else datetime.min.replace(tzinfo=UTC)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _restored(runner: RouteRunner, incoming: Incoming) -> Envelope:
    """The message a dead letter holds, ready for the route's buffer."""
    if incoming.error is not None:
        raise incoming.error
    letter = incoming.envelope
    headers = {name: values for name, values in letter.headers.items() if name not in DLQ_HEADERS}
    address = letter.header(DLQ_SUBJECT)
    envelope = Envelope(
        subject=address if address is not None else letter.subject,
        payload=letter.payload,
        headers=headers,
        key=letter.key,
        timestamp=letter.timestamp,
    )
    if letter.header(DLQ_STAGE) == INTAKE:
        return runner.mapper.map(envelope)
    return envelope
