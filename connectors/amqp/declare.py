"""The RabbitMQ exchanges and queues an amqp route declares, and what a broker has.

A source declares its exchange (``from.exchange``, durable, of ``from.exchange_type``)
and its queue (``from.queue``, or the bridge's own ``natsbridge.<route>``, durable); a
sink its exchange when ``to.declare``. The exchange type and durability are compared
with an existing one: RabbitMQ answers a declare with other settings by
PRECONDITION_FAILED ("inequivalent arg 'type' ... received 'topic' but current is
'fanout'"), which `observe` reads after a passive declare found the resource (so it
never creates one). pika is imported inside the functions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.kind import Side
from natsbridge.connectors.amqp.config import AmqpConnection, AmqpSink, AmqpSource

EXCHANGE = "RabbitMQ exchange"
QUEUE = "RabbitMQ queue"

_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)' .*received (.+) but current is (.+)$")


def exchange_declaration(
    connection: str, name: str, kind: str, create: bool, where: str
) -> Declaration:
    """A durable exchange of type `kind`."""
    return Declaration(
        resource=EXCHANGE,
        name=name,
        connection=connection,
        settings={"type": kind, "durable": True},
        compared=frozenset({"type", "durable"}),
        create=create,
        why_not_created="to.declare is false",
        where=where,
    )


def queue_declaration(connection: str, name: str, where: str) -> Declaration:
    """A durable queue (arguments left to the broker and its policies)."""
    return Declaration(
        resource=QUEUE,
        name=name,
        connection=connection,
        settings={"durable": True},
        compared=frozenset({"durable"}),
        where=where,
    )


def source_queue(route: Route) -> str:
    """The queue a source consumes: ``from.queue`` or the bridge's own."""
    assert isinstance(route.source, AmqpSource)
    return route.source.queue if route.source.queue is not None else f"natsbridge.{route.name}"


def declarations(route: Route, side: Side) -> list[Declaration]:
    """What `side` of `route` declares (the default exchange "" is never declared)."""
    where = f"route '{route.name}' {side}"
    if side == "from":
        source = route.source
        assert isinstance(source, AmqpSource)
        found = []
        if source.exchange:
            found.append(
                exchange_declaration(
                    source.connection, source.exchange, source.exchange_type, True, where
                )
            )
        return [*found, queue_declaration(source.connection, source_queue(route), where)]
    sink = route.sink
    assert isinstance(sink, AmqpSink)
    if not sink.exchange:
        return []
    return [
        exchange_declaration(
            sink.connection, sink.exchange, sink.exchange_type, sink.declare, where
        )
    ]


def _value(text: str) -> object:
    """A value as RabbitMQ's PRECONDITION_FAILED text shows it (``'fanout'``, ``'true'``)."""
    text = text.strip().strip("'")
    return {"true": True, "false": False}.get(text, text)


def difference_in(reply_text: str, settings: Mapping[str, object]) -> Mapping[str, object]:
    """The broker's settings: `settings` with the one its refusal names replaced."""
    match = _INEQUIVALENT.search(reply_text)
    if match is None:
        return {**settings, "arguments": reply_text}
    return {**settings, match.group(1): _value(match.group(3))}


def _observe(connection: AmqpConnection, declarations: list[Declaration]) -> list[Observed]:
    import pika
    import pika.exceptions

    from natsbridge.connectors.amqp.client import connection_parameters

    link = pika.BlockingConnection(connection_parameters(connection, "natsbridge:declare"))
    try:
        found: list[Observed] = []
        for declaration in declarations:
            channel = link.channel()
            is_exchange = declaration.resource == EXCHANGE
            active: dict[str, Any] = {"durable": True}
            if is_exchange:
                declare = channel.exchange_declare
                active["exchange_type"] = declaration.settings["type"]
            else:
                declare = channel.queue_declare
            try:
                declare(declaration.name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                found.append(None)
                continue
            try:
                declare(declaration.name, **active)  # the same settings: a no-op
                found.append(dict(declaration.settings))
                channel.close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 406:
                    raise
                found.append(difference_in(exc.reply_text, declaration.settings))
        return found
    finally:
        link.close()


async def observe(connection: AmqpConnection, declarations: list[Declaration]) -> list[Observed]:
    """Each declared exchange's or queue's settings on the broker, None where missing."""
    return await asyncio.to_thread(_observe, connection, declarations)
