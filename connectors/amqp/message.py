"""AMQP messages ↔ Envelopes; properties and header tables go through mappings.amqp_properties.

Received message → Envelope
    subject      the routing key (the route's mapping turns it into the target address)
    payload      the body
    headers      the basic properties (``Amqp-Content-Type`` …) and the typed header table,
                 as mappings.amqp_properties writes them, plus the source coordinates
                 ``Amqp-Exchange``, ``Amqp-Routing-Key`` and ``Amqp-Queue`` (values as
                 `mappings.headers.encode_value` writes them)
    reply        ``reply_to``
    msg_id       ``message_id``
    timestamp    the ``timestamp`` property (seconds), else the time of receipt
    origin       Origin(connection, "amqp", exchange, routing_key, queue)

pika hands over a shortstr (routing key, exchange, message_id, reply_to …) that is not
UTF-8 as bytes: it becomes text with ``surrogateescape`` (``b"\xff.x"`` → ``"\udcff.x"``),
which the escaping into NATS subjects carries reversibly, and header values get
``base64:`` of the original bytes.

Envelope → published message: the inverse (`mappings.amqp_properties.headers_to_properties`):
property headers become properties, every other header a table entry (typed by
``Amqp-Header-Types``); ``message_id`` defaults to `Envelope.msg_id`; a persistent sink
forces ``delivery_mode`` 2. RabbitMQ accepts a ``user_id`` only when it names the
publishing user, so any other ``user_id`` is left out; an ``expiration`` that is not
digits or a ``priority`` over 255 fails that one send with MappingError (RabbitMQ would
close the channel and fail every send in flight).
"""

from __future__ import annotations

import functools
import time
from typing import Any

from pika.spec import Basic, BasicProperties

from natsbridge.bridge.envelope import Envelope, Headers
from natsbridge.bridge.errors import MappingError
from natsbridge.connectors.amqp.kind import AmqpOrigin as Origin
from natsbridge.mappings.amqp import validate_routing_key
from natsbridge.mappings.amqp_properties import (
    PROPERTY_HEADERS,
    headers_to_properties,
    properties_to_headers,
)
from natsbridge.mappings.headers import AMQP_EXCHANGE, AMQP_QUEUE, AMQP_ROUTING_KEY, encode_value

PERSISTENT = 2
"""AMQP delivery_mode of a message written to disk by durable queues."""

_ORIGIN_CACHE_SIZE = 4096
"""Origins are immutable: one per (exchange, routing key) is reused, up to this many."""

# Routing keys this short cannot exceed 255 UTF-8 bytes (4 bytes per code point at most).
_SHORT_KEY = 255 // 4


class EnvelopeReader:
    """Builds Envelopes for messages received through one connection (and queue)."""

    __slots__ = ("_connection", "_origins", "_queue", "_queue_value")

    def __init__(self, connection: str, queue: str | None) -> None:
        self._connection = connection
        self._queue = queue
        self._queue_value = None if queue is None else encode_value(queue)
        self._origins: dict[tuple[str, str], Origin] = {}

    def envelope(
        self, method: Basic.Deliver | Basic.Return, properties: BasicProperties, body: bytes
    ) -> Envelope:
        """The Envelope of one received message (raises HeaderError if untranslatable)."""
        found = {
            name: value
            for name, value in vars(properties).items()
            if value is not None and name in PROPERTY_HEADERS
        }
        headers: Headers = properties_to_headers(found, properties.headers)
        headers.update(self.coordinates(method))
        msg_id = properties.message_id
        reply = properties.reply_to
        timestamp = properties.timestamp
        return Envelope(
            subject=_text(method.routing_key),
            payload=body,
            headers=headers,
            reply=reply if reply is None else _text(reply),
            msg_id=msg_id if msg_id is None else _text(msg_id),
            origin=self.origin(method),
            timestamp=float(timestamp) if isinstance(timestamp, int) else time.time(),
        )

    def undecodable(self, method: Basic.Deliver | Basic.Return, body: bytes) -> Envelope:
        """The Envelope of a message whose properties cannot be read: payload and coordinates."""
        return Envelope(
            subject=_text(method.routing_key),
            payload=body,
            headers=self.coordinates(method),
            origin=self.origin(method),
        )

    def coordinates(self, method: Basic.Deliver | Basic.Return) -> Headers:
        """The ``Amqp-Exchange``, ``Amqp-Routing-Key`` and ``Amqp-Queue`` headers."""
        headers = {
            AMQP_EXCHANGE: [encode_value(method.exchange)],
            AMQP_ROUTING_KEY: [encode_value(method.routing_key)],
        }
        if self._queue_value is not None:
            headers[AMQP_QUEUE] = [self._queue_value]
        return headers

    def origin(self, method: Basic.Deliver | Basic.Return) -> Origin:
        """The message's Origin (one per exchange and routing key, reused)."""
        exchange = _text(method.exchange)
        routing_key = _text(method.routing_key)
        origin = self._origins.get((exchange, routing_key))
        if origin is None:
            if len(self._origins) >= _ORIGIN_CACHE_SIZE:
                self._origins.clear()
            origin = Origin(
                self._connection,
                "amqp",
                exchange=exchange,
                routing_key=routing_key,
                queue=self._queue,
            )
            self._origins[(exchange, routing_key)] = origin
        return origin


def _text(value: str | bytes) -> str:
    """A shortstr as text: pika hands one that is not UTF-8 over as bytes (surrogateescape)."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


_PLAIN = {True: BasicProperties(delivery_mode=PERSISTENT), False: BasicProperties()}
"""Shared properties of messages without headers or id (never modify them)."""

SHARED_PROPERTIES_MAX = 1024
"""Distinct header sets whose properties are shared (see `properties_for`)."""


def properties_for(
    envelope: Envelope, persistent: bool, user: str | None = None, fresh: bool = False
) -> BasicProperties:
    """The AMQP properties (with header table) that carry `envelope`'s headers.

    Messages without an id share one object per distinct set of headers (the sink's frame
    publisher then encodes it once for a run of such messages: a route stamps the same
    Bridge-Origin on each), unless `fresh` asks for one the caller may modify. `user` is
    the publishing connection's user name: RabbitMQ refuses any other ``user_id`` (by
    closing the channel, which would fail every send in flight), so another one is left out.
    """
    if envelope.msg_id is None and not fresh:
        if not envelope.headers:
            return _PLAIN[persistent]
        frozen = tuple((name, tuple(values)) for name, values in envelope.headers.items())
        return _shared_properties(frozen, persistent, user)
    return _properties(envelope.headers, envelope.msg_id, persistent, user)


@functools.lru_cache(maxsize=SHARED_PROPERTIES_MAX)
def _shared_properties(
    headers: tuple[tuple[str, tuple[str, ...]], ...], persistent: bool, user: str | None
) -> BasicProperties:
    return _properties({name: list(values) for name, values in headers}, None, persistent, user)


def _properties(
    headers: Headers, msg_id: str | None, persistent: bool, user: str | None
) -> BasicProperties:
    properties: dict[str, Any]
    if headers:
        properties, table = headers_to_properties(headers)
        if table:
            properties["headers"] = table
        _check_properties(properties)
        if "user_id" in properties and properties["user_id"] != user:
            del properties["user_id"]
    else:
        properties = {}
    if persistent:
        properties["delivery_mode"] = PERSISTENT
    if msg_id is not None and "message_id" not in properties:
        properties["message_id"] = msg_id
    return BasicProperties(**properties)


def check_routing_key(routing_key: str) -> None:
    """Raise MappingError if `routing_key` does not fit AMQP's 255-byte limit."""
    if len(routing_key) > _SHORT_KEY:
        validate_routing_key(routing_key)


def _check_properties(properties: dict[str, Any]) -> None:
    """Refuse values RabbitMQ would answer by closing the channel (failing other sends too)."""
    expiration = properties.get("expiration")
    if expiration is not None and not (expiration.isascii() and expiration.isdigit()):
        raise MappingError(f"AMQP expiration must be milliseconds as digits, got {expiration!r}")
    for name in ("priority", "delivery_mode"):
        value = properties.get(name)
        if value is not None and not 0 <= value <= 255:
            raise MappingError(f"AMQP {name} must be 0..255, got {value}")
