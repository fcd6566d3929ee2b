"""The STOMP source: SUBSCRIBE with client-individual acks, hand MESSAGEs to asyncio in bursts.

On stomp.py's receiver thread each MESSAGE frame becomes an `Incoming` appended to a
deque; the first one of a burst schedules one `call_soon_threadsafe` wake-up of
`receive()`, later ones ride along. Settling goes the other way: each `ack` call writes
one ACK or NACK frame through the client's writer thread, which joins everything queued
into one ``sendall``.

What settling does, per dialect (STOMP leaves NACK to the broker):

    ack(None)            ACK
    ack(PermanentError)  rabbitmq: NACK requeue:false (the queue's dead-letter exchange
                         gets it, if it has one). activemq: ACK — the runtime has already
                         put it in the route's dead-letter stream, and ActiveMQ's NACK
                         would file a second copy in ActiveMQ.DLQ.
    ack(other error)     rabbitmq: NACK (RabbitMQ requeues it and redelivers it).
                         activemq: ActiveMQ 5.x turns a STOMP NACK into a "poison ack"
                         that moves the message to its DLQ at once, never redelivered,
                         so the source instead reconnects its subscription on the next
                         `receive()`: ActiveMQ redelivers every unacked message of a
                         closed consumer, this one included (acks given before that are
                         sent first; acks of the old connection are dropped, those
                         messages come back too).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from functools import partial

from stomp.utils import Frame  # type: ignore[import-untyped]

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import AckOnce, Incoming, unreadable
from natsbridge.bridge.errors import BridgeError, BridgeTimeout, ConnectionLost, PermanentError
from natsbridge.bridge.threads import Inbox, receive
from natsbridge.connectors.stomp.client import DEFAULT_CONNECT_TIMEOUT_S, StompClient
from natsbridge.connectors.stomp.config import StompConnection, StompSource
from natsbridge.connectors.stomp.message import EnvelopeReader, ack_frame, encode_frame, nack_frame
from natsbridge.mappings.stomp import parse_destination

log = logging.getLogger("natsbridge.stomp")

MAX_PREFETCH = 65535
"""RabbitMQ's prefetch-count is AMQP's 16-bit basic.qos field; ActiveMQ gets the same."""

ACTIVEMQ_DEFAULT_PREFETCHES = frozenset({100, 500, 1000, 32767})
"""ActiveMQ's built-in prefetch defaults (queue 1000, durable topic 100 or 1000, browser
500, topic 32767). Its broker takes a consumer asking for exactly one of them as asking for
"the default" and applies the destination policy's value instead: a durable subscriber
asking for 1000 gets 100. `activemq_prefetch` steps around them."""


def activemq_prefetch(prefetch: int) -> int:
    """`prefetch`, or one more when ActiveMQ would read it as "use the policy default"."""
    return prefetch + 1 if prefetch in ACTIVEMQ_DEFAULT_PREFETCHES else prefetch


def subscription_headers(
    dialect: str, destination: str, subscription: str, durable: bool, prefetch: int
) -> list[tuple[str, str]]:
    """The SUBSCRIBE headers for `destination` in `dialect` (see the package docstring)."""
    kind = parse_destination(destination, dialect).kind
    headers = [("destination", destination), ("id", subscription), ("ack", "client-individual")]
    if dialect == "activemq":
        headers.append(("activemq.prefetchSize", str(activemq_prefetch(prefetch))))
        if durable and kind == "topic":
            headers.append(("activemq.subscriptionName", subscription))
    else:
        headers.append(("prefetch-count", str(prefetch)))
        if durable and kind in ("topic", "exchange"):
            headers += [
                ("durable", "true"),
                ("auto-delete", "false"),
                ("x-queue-name", subscription),
            ]
    return headers


class StompDestinationSource:
    """Source reading one STOMP destination (or wildcard); see the package docstring."""

    def __init__(self, route: Route, connection: StompConnection, connection_name: str) -> None:
        spec = route.source
        assert isinstance(spec, StompSource)
        self._config = connection
        self._route_name = route.name
        self.dialect = connection.dialect
        self.destination = spec.destination
        self.subscription = spec.subscription or f"natsbridge-{route.name}"
        self.durable = spec.durable
        self.prefetch = min(route.spec.max_in_flight, MAX_PREFETCH)
        self._client: StompClient | None = None
        self._generation = 0
        self._reader = EnvelopeReader(connection_name, connection.dialect)
        self._inbox: Inbox[Incoming] | None = None  # one per connection
        self._resubscribe = False  # activemq: a retryable nack asks for redelivery
        self._subscribed = False  # the current connection got as far as its subscription

    @property
    def durable_topic(self) -> bool:
        """True when the subscription outlives the connection (a durable topic subscription)."""
        kind = parse_destination(self.destination, self.dialect).kind
        if self.dialect == "activemq":
            return self.durable and kind == "topic"
        return self.durable and kind in ("topic", "exchange")

    # ------------------------------------------------------------ Source

    async def connect(self) -> None:
        """Connect and SUBSCRIBE; returns once the broker confirmed the subscription."""
        await self.close()
        headers = subscription_headers(
            self.dialect, self.destination, self.subscription, self.durable, self.prefetch
        )
        self._generation += 1
        inbox = self._inbox = Inbox()
        self._resubscribe = False
        self._subscribed = False
        # ActiveMQ names a durable subscription by client-id + subscription name.
        client_id = self.subscription if self.dialect == "activemq" and self.durable_topic else None
        client = StompClient(self._config, f"{self._route_name} source", client_id)
        client.on_message = functools.partial(self._on_message, inbox, self._generation)
        client.on_end = functools.partial(self._on_end, inbox, self._generation)
        self._client = client
        try:
            await client.open()
            receipt, subscribed = client.expect()
            client.write(encode_frame("SUBSCRIBE", [*headers, ("receipt", receipt)]))
            try:
                await asyncio.wait_for(subscribed, DEFAULT_CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise BridgeTimeout(
                    f"stomp: {client.where}: SUBSCRIBE to {self.destination} not confirmed "
                    f"within {DEFAULT_CONNECT_TIMEOUT_S:g}s"
                ) from None
        except BaseException:
            self._client = self._inbox = None
            await client.close()
            raise
        self._subscribed = True
        log.info(
            "stomp source %s: subscribed to %s as %r (%s, prefetch %d)",
            self._route_name,
            self.destination,
            self.subscription,
            "durable" if self.durable_topic else "not durable",
            self.prefetch,
        )

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` messages, waiting at most `timeout` s for the first."""
        if self._resubscribe:
            log.info("stomp source %s: reconnecting so that ActiveMQ redelivers", self._route_name)
            await self.connect()
        return await receive(self._inbox, max_messages, timeout, "stomp: source")

    async def close(self) -> None:
        """DISCONNECT after the acks already given; unsettled messages go back. Idempotent."""
        client = self._client
        if client is None:
            return
        self._client = None
        if self._inbox is not None:
            self._inbox.end(ConnectionLost("stomp: source closed"), discard=True)
        await client.close()

    # ------------------------------------------------------------ receiver thread

    def _on_message(self, inbox: Inbox[Incoming], generation: int, frame: Frame) -> None:
        if generation != self._generation or inbox.ended:
            return  # a connection being replaced: the broker redelivers what it sent
        headers = frame.headers
        ack_id = headers.get("ack") or headers.get("message-id", "")
        body = bytes(frame.body or b"")
        ack = AckOnce(partial(self._settle, generation, ack_id))
        try:
            incoming = Incoming(self._reader.envelope(headers, body, self.destination), ack)
        except Exception as exc:  # never NACKed away: the runtime dead-letters it, then acks
            envelope = self._reader.undecodable(headers, body, self.destination)
            incoming = unreadable(envelope, ack, exc, "stomp")
        inbox.post(incoming)  # one wake-up of receive() per burst

    # ------------------------------------------------------------ any thread

    def _settle(self, generation: int, ack_id: str, error: BaseException | None) -> None:
        client = self._client
        if generation != self._generation or client is None:
            return  # that connection is gone: the broker redelivers the message anyway
        if error is None:
            client.write(ack_frame(ack_id))
        elif isinstance(error, PermanentError):
            if self.dialect == "rabbitmq":
                client.write(nack_frame(ack_id, requeue=False))
            else:
                client.write(ack_frame(ack_id))
        elif self.dialect == "rabbitmq":
            client.write(nack_frame(ack_id))
        else:
            self._resubscribe = True  # the next receive() reconnects

    # ------------------------------------------------------------ asyncio side

    def _on_end(self, inbox: Inbox[Incoming], generation: int, error: BridgeError) -> None:
        inbox.end(error, discard=True)  # their acks would go to a dead connection: they come back
        if generation != self._generation:
            return
        if self._client is not None:
            if self._subscribed:
                log.warning("stomp source %s: %s", self._route_name, error)
            self._client = None
