"""The legacy side of a RabbitMQ migration: a parity tap, its ledger, and queue depths.

(bridge.migrate.kinds.LegacySide.) The tap is a durable queue of the bridge's own,
``natsbridge.<migration>.parity``, bound to the legacy exchange with the legacy binding
keys (so it receives what the legacy consumers' queues and the mirror's own queue
receive), with ``x-expires`` so that a tap nobody drains any more disappears by itself.
`record` moves what it holds into the ledger (bridge.migrate.ledger). A legacy flow read
from a queue on the default exchange cannot be tapped (nothing can bind there): parity
says so in one line.

Parity reads the stream first (from a little before the tap opened: the server's clock is
not ours), then moves the tap into the ledger: every copy read has its original recorded,
and copies of what was published before the tap opened, stored before the first copy that
pairs, are context. Lag: the depth of the queue the mirror consumes (passive declare:
ready messages, not those in flight).

pika blocks: the async functions run it on a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from natsbridge.bridge.errors import PermanentError, RetryableError
from natsbridge.bridge.migrate import ledger as ledgers
from natsbridge.bridge.migrate.compare import Seen, content_digest
from natsbridge.bridge.migrate.kinds import LegacyContext, StreamMessage, StreamReader
from natsbridge.bridge.migrate.ledger import Ledger
from natsbridge.connectors.amqp.config import AmqpConnection, AmqpSource
from natsbridge.mappings import headers as h

TAP_EXPIRES_MS = 7 * 24 * 3600 * 1000  # a tap not drained for a week deletes itself
GET_BATCH = 500  # messages recorded per ledger commit
CLOCK_MARGIN_S = 5.0  # the stream is read from this much before the tap opened (NATS's clock)


def tap_queue(migration: str) -> str:
    """The name of a migration's parity tap queue."""
    return f"natsbridge.{migration}.parity"


@contextlib.contextmanager
def _channel(connection: AmqpConnection, purpose: str) -> Iterator[Any]:
    import pika.exceptions

    from natsbridge.connectors.amqp.client import connection_parameters

    try:
        link = pika.BlockingConnection(connection_parameters(connection, f"natsbridge:{purpose}"))
    except pika.exceptions.ProbableAuthenticationError as exc:
        raise PermanentError(f"amqp: login refused: {exc}") from None
    except pika.exceptions.AMQPError as exc:
        raise RetryableError(f"amqp: cannot connect: {exc!r}") from None
    try:
        yield link.channel()
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise PermanentError(f"amqp: {exc.reply_text}") from None
    except pika.exceptions.AMQPError as exc:
        raise RetryableError(f"amqp: {exc!r}") from None
    finally:
        with contextlib.suppress(Exception):
            link.close()


def _tappable(source: AmqpSource, migration: str) -> str:
    if source.exchange is None or source.exchange == "":
        raise PermanentError(
            f"migration {migration}: parity needs a legacy exchange to bind a tap to; "
            f"queue {source.queue!r} on the default exchange cannot be tapped"
        )
    return source.exchange


def open_tap_queue(connection: AmqpConnection, source: AmqpSource, migration: str) -> None:
    """Declare the tap queue and bind it like the legacy consumers' (idempotent)."""
    exchange = _tappable(source, migration)
    queue = tap_queue(migration)
    with _channel(connection, f"{migration}:parity") as channel:
        channel.exchange_declare(exchange, passive=True)
        channel.queue_declare(queue, durable=True, arguments={"x-expires": TAP_EXPIRES_MS})
        for key in source.binding_keys:
            channel.queue_bind(queue, exchange, routing_key=key)


def close_tap_queue(connection: AmqpConnection, migration: str) -> None:
    """Delete the tap queue (a migration leaving verify)."""
    with _channel(connection, f"{migration}:parity") as channel:
        channel.queue_delete(tap_queue(migration))


def record(
    connection: AmqpConnection,
    connection_name: str,
    migration: str,
    ledger: Ledger,
    names: Sequence[str],
) -> int:
    """Move what the tap holds into the ledger; returns how many messages were recorded."""
    from natsbridge.connectors.amqp.message import EnvelopeReader

    queue = tap_queue(migration)
    reader = EnvelopeReader(connection_name, queue)
    total = 0
    with _channel(connection, f"{migration}:parity") as channel:
        while True:
            rows: list[tuple[str, str, str | None, str]] = []
            last_tag = None
            for _ in range(GET_BATCH):
                method, properties, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                last_tag = method.delivery_tag
                envelope = reader.envelope(method, properties, body)
                digest = content_digest(None, envelope.payload, envelope.headers, names)
                rows.append((method.exchange, method.routing_key, envelope.msg_id, digest))
            if last_tag is None:
                return total
            total += ledger.append(rows)  # durable first, then acked: never zero times
            channel.basic_ack(last_tag, multiple=True)


def queue_depth(connection: AmqpConnection, queue: str) -> int | None:
    """Messages ready in `queue` (passive declare), or None when it does not exist."""
    import pika.exceptions

    try:
        with _channel(connection, "lag") as channel:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
    except PermanentError:
        return None  # 404 NOT_FOUND closes the channel
    except pika.exceptions.AMQPError as exc:
        raise RetryableError(f"amqp: {exc!r}") from None


def seen_in_ledger(ledger: Ledger, since: float) -> list[Seen]:
    """The ledger's entries as Seen; those recorded before `since` are context."""
    return [
        Seen(
            group=sys.intern(f"exchange {entry.exchange}"),
            position=entry.id,
            where=(
                ("tap", "ledger"),
                ("entry", entry.id),
                ("exchange", entry.exchange),
                ("routing_key", entry.routing_key),
                ("message_id", entry.message_id),
            ),
            digest=entry.digest,
            in_window=entry.recorded >= since,
        )
        for entry in ledger.entries()
    ]


def copy_reader(stream: str, since: float, names: Sequence[str]) -> Callable[[StreamMessage], Seen]:
    """Converts a stream message into Seen, paired with ledger entries by digest."""

    def convert(msg: StreamMessage) -> Seen:
        exchange = msg.headers.get(h.AMQP_EXCHANGE)
        routing_key = msg.headers.get(h.AMQP_ROUTING_KEY)
        group = f"exchange {h.decode_text_value(exchange[0])}" if exchange else f"stream {stream}"
        return Seen(
            group=sys.intern(group),
            position=msg.seq,
            where=(
                ("stream", stream),
                ("seq", msg.seq),
                ("subject", msg.subject),
                ("routing_key", h.decode_text_value(routing_key[0]) if routing_key else None),
            ),
            digest=content_digest(None, msg.payload, msg.headers, names),
            in_window=msg.time >= since,
        )

    return convert


def _parts(context: LegacyContext) -> tuple[AmqpConnection, AmqpSource]:
    assert isinstance(context.connection, AmqpConnection)
    assert isinstance(context.source, AmqpSource)
    return context.connection, context.source


async def collect(
    context: LegacyContext, since: float, read_stream: StreamReader
) -> tuple[list[Seen], list[Seen]]:
    """The ledger (after moving the tap into it) and the stream since the tap opened;
    PermanentError when no tap is open (it opens when the migration enters verify)."""
    connection, source = _parts(context)
    _tappable(source, context.migration)
    if not ledgers.ledger_path(context.data_dir, context.migration).exists():
        raise PermanentError(
            f"migration {context.migration}: no parity tap is recording the legacy side; "
            "it opens when the migration enters verify (natsbridge migrate advance)"
        )
    ledger = Ledger.open(context.data_dir, context.migration)
    try:
        started = (ledger.started or time.time()) - CLOCK_MARGIN_S
        copies = await read_stream(started, copy_reader(context.stream, since, context.headers))
        await asyncio.to_thread(
            record, connection, source.connection, context.migration, ledger, context.headers
        )
        legacy = seen_in_ledger(ledger, since)
    finally:
        ledger.close()
    return legacy, copies


async def open_tap(context: LegacyContext) -> None:
    """Note when recording starts, then declare and bind the tap queue (in this order:
    every message the tap receives was published, and copied, after that time)."""
    connection, source = _parts(context)
    ledger = Ledger.open(context.data_dir, context.migration)
    try:
        ledger.start()
    finally:
        ledger.close()
    await asyncio.to_thread(open_tap_queue, connection, source, context.migration)


async def close_tap(context: LegacyContext) -> None:
    """Delete the tap queue and the ledger."""
    connection, _ = _parts(context)
    await asyncio.to_thread(close_tap_queue, connection, context.migration)
    ledgers.drop(context.data_dir, context.migration)


async def lag(context: LegacyContext) -> tuple[int | None, str]:
    """The depth of the queue the mirror consumes."""
    connection, source = _parts(context)
    queue = source.queue or f"natsbridge.{context.mirror_route}"
    return await asyncio.to_thread(queue_depth, connection, queue), f"queue {queue}"


def drain_source(address: str, route: str) -> dict[str, Any]:
    """QUEUE: what sits in that queue."""
    return {"queue": address}


def drain_sink(address: str) -> dict[str, Any]:
    """EXCHANGE[/ROUTING_KEY]: an existing exchange ("" is the default one); the key is a
    template, by default the routing key the message came with (``Amqp-Routing-Key``)."""
    exchange, _, routing_key = address.partition("/")
    key = routing_key or "{{header(Amqp-Routing-Key)}}"
    return {"exchange": exchange, "routing_key": key, "declare": False}
