"""A route's mapping step: from a source's envelope to the envelope its sink will write.

Pure logic, no I/O. It renders the route's compiled templates into the target address
(and key), stamps the loop-prevention headers, derives the dedup id under `exactly_once`
(the source kind's `dedup_id`), checks the rendered address (the sink kind's
`check_address`) and the payload limit. Anything that cannot be mapped raises a
PermanentError: the runtime dead-letters that message and the route keeps flowing.

Dedup only when asked: under `exactly_once` the mapped envelope's `msg_id` (the buffer's
dedup key, the JetStream sink's ``Nats-Msg-Id``) is `dedup_id`; under the other
guarantees it is None and a ``Nats-Msg-Id`` the message brought (from a NATS source) is
renamed like any reserved name (``%4Eats-Msg-Id``), so that two distinct messages that
share an id are both delivered.

Loop prevention: every bridge hop appends `Bridge-Origin: <bridge id>/<source
connection>` and increments `Bridge-Hops`. A route drops a message that this bridge
took from the very connection the route would write it to (a two-way pair of routes
would otherwise send it back): that copy is an echo, dropped and counted as looped. A
message that has crossed `hop_limit` bridges (a loop of bridges, or a producer's own
`Bridge-Hops`) is dead-lettered with the reason, never dropped unseen.
A chain through one bridge (RabbitMQ -> NATS -> Kafka) is not a loop and passes.
"""

from __future__ import annotations

from collections.abc import Callable

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings, Delivery, Model
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import HopLimitExceeded, MappingError, PayloadTooLarge
from natsbridge.bridge.kind import ConnectorKind, remembered
from natsbridge.bridge.registry import load_connector
from natsbridge.mappings.headers import (
    BRIDGE_HOPS,
    BRIDGE_ORIGIN,
    ESCAPED_NATS_MSG_ID,
    NATS_MSG_ID,
)

VALID_ADDRESSES_MAX = 4096  # rendered addresses remembered as valid, per route


class LoopDetected(Exception):
    """The message would go back to the connection this bridge took it from (an echo)."""


class RouteMapper:
    """Maps envelopes for one route."""

    def __init__(self, route: Route, bridge: BridgeSettings, sink_connection: Model) -> None:
        self.route = route
        self.hop_limit = bridge.hop_limit
        self.stamp = f"{bridge.id}/{route.source.connection}"
        self.returning = f"{bridge.id}/{route.sink.connection}"
        sink_kind = load_connector(route.sink_kind)
        # The rule of the connection written to (every connection model has its `kind`).
        writer = load_connector(getattr(sink_connection, "kind", route.sink_kind))
        self.check_address = _remembered(writer.check_address(sink_connection))
        self.address = route.templates[sink_kind.sink_templates[0]]
        self.key = route.templates.get("key")
        self.source_kind = load_connector(route.source_kind)
        self.exactly_once = route.spec.delivery is Delivery.EXACTLY_ONCE
        self.max_payload = route.spec.max_payload

    def map(self, envelope: Envelope) -> Envelope:
        """The envelope to buffer and send; raises LoopDetected or a PermanentError."""
        origins = envelope.headers.get(BRIDGE_ORIGIN, [])
        if self.returning in origins:
            raise LoopDetected(f"came from {self.route.sink.connection} through this bridge")
        hops = _hops(envelope)
        if hops >= self.hop_limit:
            raise HopLimitExceeded(f"crossed {hops} bridges, the hop limit is {self.hop_limit}")
        if self.max_payload is not None and len(envelope.payload) > self.max_payload:
            raise PayloadTooLarge(len(envelope.payload), self.max_payload)
        headers = {name: list(values) for name, values in envelope.headers.items()}
        headers[BRIDGE_ORIGIN] = [*origins, self.stamp]
        headers[BRIDGE_HOPS] = [str(hops + 1)]
        msg_id = None
        if self.exactly_once:
            msg_id = dedup_id(self.source_kind, envelope)
            headers[NATS_MSG_ID] = [msg_id]
        elif NATS_MSG_ID in headers:
            headers[ESCAPED_NATS_MSG_ID] = headers.pop(NATS_MSG_ID)
        key = envelope.key
        if self.key is not None:
            # surrogateescape: a key rendered from bytes that were not UTF-8 gets them back
            key = self.key.render(envelope).encode("utf-8", "surrogateescape")
        address = self.address.render(envelope)
        if not address.isascii():
            _check_utf8(address)
        self.check_address(address)
        return Envelope(  # not dataclasses.replace(), which costs twice as much
            subject=address,
            payload=envelope.payload,
            headers=headers,
            reply=envelope.reply,
            msg_id=msg_id,
            origin=envelope.origin,
            timestamp=envelope.timestamp,
            key=key,
        )


def dedup_id(source_kind: ConnectorKind, envelope: Envelope) -> str:
    """A message id that is the same every time the same source message is read again.

    The source kind's rule (`ConnectorKind.dedup_id`): Kafka: topic/partition/offset.
    Others: the message id the source connector found (AMQP message_id, STOMP
    message-id, JetStream Nats-Msg-Id), else the JetStream stream sequence. Without any
    of these a redelivery cannot be told from a new message, and a MappingError says so.
    A message id that is not plain text (control characters, bytes that were not UTF-8,
    surrounding spaces) is written ``base64:…`` (`mappings.headers.encode_value`): it can
    never break a header block, and distinct ids stay distinct.
    """
    found = source_kind.dedup_id(envelope)
    if found is None:
        raise MappingError(
            "exactly_once needs a stable message id: this message has no source "
            "coordinates and no message id (set message_id / message-id on the producer)"
        )
    return found


def _remembered(check: Callable[[str], None] | None) -> Callable[[str], None]:
    """`check` of a rendered address, remembering the addresses it passed (a bounded few).

    No check: a NATS subject template validates what it renders.
    """
    return _accept if check is None else remembered(check, VALID_ADDRESSES_MAX)


def _accept(address: str) -> None:
    return None


def _check_utf8(address: str) -> None:
    """MappingError for an address holding bytes that were not UTF-8 (lone surrogates)."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MappingError(
            f"the rendered address {address!r} holds bytes that are not UTF-8 "
            f"(at offset {exc.start}): use an escaping template such as {{{{routing_key}}}} "
            "into a NATS subject"
        ) from None


def _hops(envelope: Envelope) -> int:
    value = envelope.header(BRIDGE_HOPS)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise MappingError(f"{BRIDGE_HOPS} header is not a number: {value!r}") from None
