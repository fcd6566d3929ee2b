"""The AMQP source: consume a queue with manual acks, hand deliveries to asyncio in batches.

On the pika thread each delivery becomes an `Incoming` and joins a batch; the batch
crosses to the event loop with one `call_soon_threadsafe` after pika has dispatched
everything it read from the socket in that round. `receive()` takes from the batches
already on the loop side. Settling goes the other way: each `ack` call appends to a
queue and at most one wake-up of the pika thread is pending at a time; there, acks are
coalesced into one `basic.ack multiple=true` up to the highest tag below which every
delivery is settled, and the rest are acked, nacked or rejected one by one.

A delivery whose properties or header table cannot be converted is never rejected to
the queue (the bridge's own queue has no dead-letter exchange: it would vanish): it is
handed over as an `Incoming` with `error` set, its payload and coordinates kept, and the
runtime dead-letters it into the route's dead-letter stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial

from pika.channel import Channel
from pika.spec import Basic, BasicProperties

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import AckOnce, Incoming, unreadable
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    ConnectionLost,
    MessageRejected,
    PermanentError,
)
from natsbridge.bridge.threads import Inbox, receive, settle
from natsbridge.connectors.amqp.client import AmqpClient, Steps, url_user
from natsbridge.connectors.amqp.config import AmqpConnection, AmqpSource
from natsbridge.connectors.amqp.declare import declarations, source_queue
from natsbridge.connectors.amqp.errors import translating
from natsbridge.connectors.amqp.message import EnvelopeReader, properties_for
from natsbridge.mappings.amqp_properties import PROPERTY_HEADERS
from natsbridge.mappings.headers import decode_text_value

log = logging.getLogger("natsbridge.amqp")

MAX_PREFETCH = 65535
"""AMQP's prefetch-count is a 16-bit field."""


class AmqpQueueSource:
    """Source (and Responder) reading one RabbitMQ queue; see the package docstring."""

    def __init__(self, route: Route, connection: AmqpConnection, connection_name: str) -> None:
        spec = route.source
        assert isinstance(spec, AmqpSource)
        self._spec = spec
        self._config = connection
        self._connection_name = connection_name
        self._route_name = route.name
        self.queue = source_queue(route)
        self._declared = declarations(route, "from")  # [exchange,] queue
        self.prefetch = min(spec.prefetch or route.spec.max_in_flight, MAX_PREFETCH)
        self._client: AmqpClient | None = None
        self._generation = 0
        self._inbox: Inbox[Incoming] | None = None  # one per connection
        # pika side
        self._reader = EnvelopeReader(connection_name, self.queue)
        self._batch: list[Incoming] = []
        self._batch_scheduled = False
        self._settles: deque[tuple[int, int, BaseException | None]] = deque()
        self._settle_scheduled = False
        self._floor = 1  # every delivery tag below this one is settled
        self._settled: set[int] = set()  # settled tags at or above the floor

    # ------------------------------------------------------------ Source

    async def connect(self) -> None:
        """Connect, declare/bind what the route asks for, set prefetch and start consuming."""
        await self.close()
        self._generation += 1
        inbox = self._inbox = Inbox()
        self._batch = []
        self._batch_scheduled = False
        self._settles.clear()
        self._settle_scheduled = False
        self._floor = 1
        self._settled = set()
        client = AmqpClient(self._config, f"{self._route_name} source")
        client.on_end = functools.partial(self._on_end, self._generation, inbox)
        self._client = client
        try:
            await client.open(functools.partial(self._setup, inbox=inbox))
        except BaseException:
            self._client = None
            self._inbox = None
            raise
        log.info(
            "amqp source %s: consuming queue %r (prefetch %d)",
            self._route_name,
            self.queue,
            self.prefetch,
        )

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` deliveries, waiting at most `timeout` s for the first."""
        return await receive(self._inbox, max_messages, timeout, "amqp: source")

    async def close(self) -> None:
        """Send the acks already given, then close the connection (unsettled ones requeue)."""
        client = self._client
        if client is None:
            return
        self._client = None
        client.call(lambda: self._flush_settles(client))
        await client.close()

    # ------------------------------------------------------------ Responder

    async def respond(self, request: Envelope, reply: Envelope) -> None:
        """Publish `reply` to the request's reply_to through the default exchange."""
        if not request.reply:
            raise MessageRejected("amqp: the request has no reply_to to answer")
        client = self._client
        if client is None:
            raise ConnectionLost("amqp: source not connected")
        properties = properties_for(reply, False, url_user(self._config.url), fresh=True)
        properties.correlation_id = _correlation_id(request)
        properties.reply_to = None
        routing_key = request.reply
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def publish() -> None:
            try:
                with translating():
                    assert client.channel is not None
                    client.channel.basic_publish("", routing_key, reply.payload, properties)
            except BridgeError as exc:
                client.post(settle, done, exc)
            else:
                client.post(settle, done)

        if not client.call(publish):
            raise ConnectionLost("amqp: connection lost")
        await done

    # ------------------------------------------------------------ pika thread

    def _setup(self, client: AmqpClient, inbox: Inbox[Incoming]) -> Steps:
        spec = self._spec
        *exchange, queue = self._declared  # "" is the default exchange: never declared
        for declaration in exchange:
            yield from client.ensure_exchange(declaration)
        yield from client.ensure_queue(queue)
        if spec.exchange:
            for key in spec.binding_keys:
                yield functools.partial(self._bind, client, spec.exchange, key)
        yield lambda done: client.ch.basic_qos(prefetch_count=self.prefetch, callback=done)
        client.ch.add_on_cancel_callback(lambda _frame: self._on_cancelled(client))
        generation = self._generation

        def on_message(
            channel: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes
        ) -> None:
            self._on_message(client, generation, inbox, channel, method, properties, body)

        yield lambda done: client.ch.basic_consume(
            self.queue, on_message, auto_ack=False, callback=done
        )

    def _bind(self, client: AmqpClient, exchange: str, key: str, done: Callable[..., None]) -> None:
        client.ch.queue_bind(self.queue, exchange, routing_key=key, callback=done)

    def _on_message(
        self,
        client: AmqpClient,
        generation: int,
        inbox: Inbox[Incoming],
        channel: Channel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        tag: int = method.delivery_tag
        ack = AckOnce(partial(self._settle, generation, tag))
        try:
            incoming = Incoming(self._reader.envelope(method, properties, body), ack)
        except Exception as exc:  # never rejected to the queue (it may have no DLX): the
            # runtime dead-letters the payload and coordinates with the reason, then acks
            incoming = unreadable(self._reader.undecodable(method, body), ack, exc, "amqp")
        self._batch.append(incoming)
        if not self._batch_scheduled:
            self._batch_scheduled = True
            # Runs after pika has dispatched every frame of this socket read: one batch.
            client.soon(lambda: self._flush_batch(inbox))

    def _flush_batch(self, inbox: Inbox[Incoming]) -> None:
        batch = self._batch
        self._batch = []
        self._batch_scheduled = False
        inbox.post_all(batch)

    def _settle(self, generation: int, tag: int, error: BaseException | None) -> None:
        """From any thread: queue one settlement; wake the pika thread once per batch."""
        client = self._client
        if generation != self._generation or client is None:
            return  # that channel is gone: the broker redelivers the message anyway
        self._settles.append((generation, tag, error))
        if not self._settle_scheduled:
            self._settle_scheduled = True
            client.call(lambda: self._flush_settles(client))

    def _flush_settles(self, client: AmqpClient) -> None:
        """On the pika thread: send queued settlements, coalescing acks."""
        self._settle_scheduled = False  # before draining: a racing _settle wakes us again
        channel = client.channel
        settles = self._settles
        if channel is None or not channel.is_open:
            settles.clear()
            return
        settled = self._settled
        floor = self._floor
        acked: list[int] = []
        while settles:
            generation, tag, error = settles.popleft()
            if generation != self._generation or tag < floor or tag in settled:
                continue  # an old channel's tag, or settled already
            settled.add(tag)
            if error is None:
                acked.append(tag)
            elif isinstance(error, PermanentError):
                channel.basic_reject(tag, requeue=False)
            else:
                channel.basic_nack(tag, multiple=False, requeue=True)
        while floor in settled:
            settled.remove(floor)
            floor += 1
        self._floor = floor
        top = 0
        for tag in acked:
            if tag < floor:
                top = max(top, tag)
            else:
                channel.basic_ack(tag)  # a gap below it: ack it alone
        if top:
            # Every tag up to `top` is settled: those settled earlier are no longer
            # outstanding, so this acks exactly the ones in `acked` below the floor.
            channel.basic_ack(top, multiple=True)

    def _on_cancelled(self, client: AmqpClient) -> None:
        client.fail(ConnectionLost(f"amqp: the broker cancelled the consumer of {self.queue!r}"))

    # ------------------------------------------------------------ asyncio side

    def _on_end(self, generation: int, inbox: Inbox[Incoming], error: BridgeError) -> None:
        inbox.end(error, discard=True)  # their acks would go to a dead channel: redelivered
        if generation != self._generation:
            return
        if self._client is not None:
            log.warning("amqp source %s: %s", self._route_name, error)
        self._client = None


def _correlation_id(request: Envelope) -> str | None:
    values = request.headers.get(PROPERTY_HEADERS["correlation_id"])
    return decode_text_value(values[0]) if values else None
