"""The `amqp` kind: what the core knows about RabbitMQ routes (see bridge.kind)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from natsbridge.bridge.config.model import Endpoint, Model
from natsbridge.bridge.declare import Declaration, Observed
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.kind import (
    ConnectorKind,
    Finding,
    Matcher,
    Placeholder,
    Side,
    first_match,
    origin_value,
)
from natsbridge.connectors.amqp.config import AmqpConnection, AmqpSink, AmqpSource
from natsbridge.connectors.amqp.declare import declarations as declared_by
from natsbridge.connectors.amqp.declare import observe as observe_declared
from natsbridge.mappings import amqp
from natsbridge.mappings.headers import AMQP_EXCHANGE, AMQP_QUEUE, AMQP_ROUTING_KEY

if TYPE_CHECKING:
    from natsbridge.bridge.config.loader import Route
    from natsbridge.bridge.config.model import BridgeSettings, RouteSpec
    from natsbridge.bridge.connector import Sink, Source

SHORT_STRING = 255  # bytes in an AMQP 0-9-1 exchange, queue or routing key


class AmqpOrigin(NamedTuple):
    """Where a message from RabbitMQ came from."""

    connection: str
    kind: str
    exchange: str | None = None
    routing_key: str | None = None
    queue: str | None = None  # the queue the message was consumed from


def _routing_key(env: Envelope) -> str:
    o = env.origin
    return o.routing_key if o is not None and o.routing_key is not None else env.subject


class AmqpKind(ConnectorKind):
    """RabbitMQ (AMQP 0-9-1): queues and exchanges, routing keys with ``*``/``#`` bindings."""

    name = "amqp"
    connection_model = AmqpConnection
    source_model = AmqpSource
    sink_model = AmqpSink
    sink_templates = ("routing_key",)
    address = Placeholder(_routing_key)
    address_noun = "routing key"
    placeholders: ClassVar[Mapping[str, Placeholder]] = {
        "routing_key": address,
        "exchange": origin_value("exchange"),
        "queue": origin_value("queue"),
    }
    coordinate_headers = (AMQP_EXCHANGE, AMQP_ROUTING_KEY, AMQP_QUEUE)
    drivers = ("pika",)
    extra = "amqp"
    request_reply = ("an amqp source", "an amqp sink")
    direct = ("an amqp source", "an amqp sink")

    def driver_loggers(self) -> Mapping[str, int]:
        """pika, quiet: its channel closes (also the 404 of the passive declare a route
        makes on its first start, and handles) below ERROR, and each failed connection
        attempt (eight ERROR lines) below CRITICAL: the route logs one line with the cause."""
        return {
            "pika": logging.WARNING,
            "pika.channel": logging.ERROR,
            "pika.adapters": logging.CRITICAL,
        }

    def source_patterns(self, source: Model) -> tuple[str, ...]:
        """The binding keys of an exchange source; a queue source takes everything."""
        assert isinstance(source, AmqpSource)
        return tuple(source.binding_keys) if source.exchange is not None else ()

    def match(self, patterns: tuple[str, ...]) -> Matcher:
        """Routing keys against binding keys (``*`` one word, ``#`` any)."""
        return first_match(patterns, amqp.topic_match)

    def stars(self, pattern: str) -> int:
        """The ``*`` words of a binding key."""
        return amqp.count_stars(pattern)

    def check_address(self, connection: Model) -> Callable[[str], None]:
        """A routing key must fit an AMQP short string."""
        return amqp.validate_routing_key

    def check_source(self, source: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        """Queue, exchange and binding keys that RabbitMQ would refuse as too long."""
        assert isinstance(source, AmqpSource)
        yield from _long_names(("from", "queue"), source.queue)
        yield from _long_names(("from", "exchange"), source.exchange)
        for i, key in enumerate(source.binding_keys):
            yield from _long_names(("from", "binding_keys", i), key)

    def check_sink(self, sink: Endpoint, route: RouteSpec | None) -> Iterator[Finding]:
        """An exchange name that RabbitMQ would refuse as too long."""
        assert isinstance(sink, AmqpSink)
        yield from _long_names(("to", "exchange"), sink.exchange)

    def writes_back(self, source: Model) -> dict[str, Any]:
        """A queue: the default exchange with the queue's name; an exchange: itself."""
        assert isinstance(source, AmqpSource)
        if source.queue is not None:
            return {"exchange": "", "routing_key": source.queue, "declare": False}
        return {"exchange": source.exchange, "exchange_type": source.exchange_type}

    def describe_source(self, source: Model) -> str:
        """``queue Q`` or ``exchange X key1,key2``."""
        assert isinstance(source, AmqpSource)
        if source.queue is not None:
            return f"queue {source.queue}"
        return f"exchange {source.exchange} {','.join(source.binding_keys)}"

    def describe_sink(self, sink: Model) -> str:
        """``exchange X key K``."""
        assert isinstance(sink, AmqpSink)
        return f"exchange {sink.exchange or '(default)'} key {sink.routing_key}"

    def preview_origin(self, source: Endpoint, address: str, partition: int | None) -> AmqpOrigin:
        """A message with routing key `address`, from the source's exchange and queue."""
        assert isinstance(source, AmqpSource)
        return AmqpOrigin(
            source.connection,
            "amqp",
            exchange=source.exchange,
            routing_key=address,
            queue=source.queue,
        )

    def declarations(self, route: Route, side: Side) -> list[Declaration]:
        """The source's exchange and queue, the sink's exchange (connectors/amqp/declare.py)."""
        return declared_by(route, side)

    async def observe(self, connection: Model, declarations: list[Declaration]) -> list[Observed]:
        """Passive declares (None: missing), then a same-settings declare reads differences."""
        assert isinstance(connection, AmqpConnection)
        return await observe_declared(connection, declarations)

    def open_source(self, route: Route, connection: Model, bridge: BridgeSettings) -> Source:
        """A queue consumer (connectors/amqp/source.py)."""
        from natsbridge.connectors.amqp.source import AmqpQueueSource

        assert isinstance(connection, AmqpConnection)
        return AmqpQueueSource(route, connection, route.source.connection)

    def open_sink(self, route: Route, connection: Model, bridge: BridgeSettings) -> Sink:
        """An exchange publisher with confirms (connectors/amqp/sink.py)."""
        from natsbridge.connectors.amqp.sink import AmqpExchangeSink

        assert isinstance(connection, AmqpConnection)
        return AmqpExchangeSink(route, connection, route.sink.connection)


def _long_names(path: tuple[str | int, ...], text: str | None) -> Iterator[Finding]:
    if text and len(text.encode("utf-8", errors="surrogatepass")) > SHORT_STRING:
        yield Finding(path, f"expected at most {SHORT_STRING} bytes (an AMQP name)")


connector = AmqpKind()
"""The `amqp` kind (entry point ``natsbridge.connectors: amqp``)."""
