"""The AMQP sink: pipelined publishing with publisher confirms, and request/reply.

`send_batch()` queues (future, routing key, body, properties) in an outbox and wakes the
pika thread at most once per batch; the pika thread publishes the whole outbox back to back
and remembers delivery tag → future. RabbitMQ confirms with `multiple=true` whenever it
can, so one basic.ack settles many tags; the futures confirmed during one socket read
cross to the event loop in one `call_soon_threadsafe`.

Mandatory publishes: RabbitMQ sends basic.return *before* the basic.ack of the same
message, but basic.return carries no delivery tag. The sink matches it to the oldest
unconfirmed message with the same routing key and body (the only way the protocol
allows; two such messages are routed alike), and that message's confirm then fails with
MessageRejected. A basic.nack also fails the send with MessageRejected.

Request/reply uses RabbitMQ's direct reply-to: the first `request()` starts a no-ack
consumer on `amq.rabbitmq.reply-to` on the publishing channel (the protocol requires the
same channel); each request carries a fresh `correlation_id`, and the reply with that id
resolves it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from collections.abc import Sequence

from pika import exceptions as pe
from pika.channel import Channel
from pika.frame import Method
from pika.spec import Basic, BasicProperties

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    MappingError,
    MessageRejected,
)
from natsbridge.bridge.threads import Completions, Confirms, settle
from natsbridge.connectors.amqp.client import DEFAULT_CLOSE_TIMEOUT_S, AmqpClient, Steps, url_user
from natsbridge.connectors.amqp.config import AmqpConnection, AmqpSink
from natsbridge.connectors.amqp.declare import declarations
from natsbridge.connectors.amqp.driver import FramePublisher
from natsbridge.connectors.amqp.errors import translate
from natsbridge.connectors.amqp.message import EnvelopeReader, check_routing_key, properties_for

log = logging.getLogger("natsbridge.amqp")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's pseudo-queue for RPC replies without a reply queue of one's own."""

# An outbox entry: the future to settle, routing key, body, properties, is it a request.
_Item = tuple["asyncio.Future[None]", str, bytes, BasicProperties, bool]


class AmqpExchangeSink:
    """Sink (and Requester) publishing to one exchange; see the package docstring."""

    def __init__(self, route: Route, connection: AmqpConnection, connection_name: str) -> None:
        spec = route.sink
        assert isinstance(spec, AmqpSink)
        self._spec = spec
        self._config = connection
        self._route_name = route.name
        self._exchange = spec.exchange
        self._declared = declarations(route, "to")
        self._mandatory = spec.mandatory
        self._persistent = spec.persistent
        self._user = url_user(connection.url)
        self._client: AmqpClient | None = None
        self._generation = 0
        self._down = "amqp: sink not connected"  # why sends fail while there is no client
        # asyncio side
        self._confirms = Confirms()
        self._completions: Completions | None = None  # one per connection
        self._replies: dict[str, asyncio.Future[Envelope]] = {}
        # shared: appended on the loop, drained on the pika thread
        self._outbox: deque[_Item] = deque()
        self._outbox_scheduled = False
        # pika side
        self._reader = EnvelopeReader(connection_name, None)
        self._next_tag = 0
        self._pending: dict[int, _Item] = {}
        self._order: deque[int] = deque()
        self._returned: dict[int, BridgeError] = {}
        self._confirmed: list[tuple[asyncio.Future[None], BridgeError | None]] = []
        self._confirm_scheduled = False
        self._replying = False
        self._frames: FramePublisher | None = None

    # ------------------------------------------------------------ Sink

    async def connect(self) -> None:
        """Connect, declare the exchange if asked, and turn on publisher confirms."""
        await self.close()
        self._generation += 1
        self._outbox.clear()
        self._outbox_scheduled = False
        self._next_tag = 0
        self._pending.clear()
        self._order.clear()
        self._returned.clear()
        self._confirmed = []
        self._confirm_scheduled = False
        self._replying = False
        self._frames = None
        self._completions = Completions()
        client = AmqpClient(self._config, f"{self._route_name} sink")
        client.on_end = functools.partial(self._on_end, self._generation)
        await client.open(self._setup)
        # Only now may sends go out: before confirm.select, delivery tags would not count.
        self._client = client
        log.info("amqp sink %s: publishing to exchange %r", self._route_name, self._exchange)

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish `envelopes` to the exchange, each with its subject as routing key."""
        return await self._confirms.send_each(envelopes, self._submit)

    def _submit(self, envelope: Envelope) -> asyncio.Future[None]:
        client = self._client
        if client is None:
            raise ConnectionLost(self._down)  # a fresh error: tracebacks must not pile up
        check_routing_key(envelope.subject)
        properties = properties_for(envelope, self._persistent, self._user)
        return self._publish(client, envelope.subject, envelope.payload, properties, False)

    async def close(self) -> None:
        """Wait (bounded) for outstanding confirms, then close the connection. Idempotent."""
        client = self._client
        if client is None:
            return
        await self._confirms.drain(DEFAULT_CLOSE_TIMEOUT_S, f"amqp sink {self._route_name}")
        if self._client is client:
            self._client = None
            self._down = "amqp: sink closed"
        await client.close()

    # ------------------------------------------------------------ Requester

    async def request(self, envelope: Envelope, timeout: float) -> Envelope:
        """Publish `envelope` with direct reply-to and a fresh correlation_id; await the reply."""
        client = self._client
        if client is None:
            raise ConnectionLost(self._down)  # a fresh error: tracebacks must not pile up
        check_routing_key(envelope.subject)
        properties = properties_for(envelope, self._persistent, self._user, fresh=True)
        correlation_id = uuid.uuid4().hex
        properties.correlation_id = correlation_id
        properties.reply_to = DIRECT_REPLY_TO
        reply: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = reply
        try:
            async with asyncio.timeout(timeout):
                published = self._publish(
                    client, envelope.subject, envelope.payload, properties, True
                )
                (error,) = await self._confirms.wait([published])
                if error is not None:
                    raise error
                return await reply
        except TimeoutError:
            raise BridgeTimeout(
                f"amqp: no reply to {envelope.subject!r} within {timeout:g}s"
            ) from None
        finally:
            self._replies.pop(correlation_id, None)

    # ------------------------------------------------------------ asyncio side

    def _publish(
        self,
        client: AmqpClient,
        routing_key: str,
        body: bytes,
        properties: BasicProperties,
        request: bool,
    ) -> asyncio.Future[None]:
        """Queue one publish for the pika thread; the future settles with its confirm."""
        future: asyncio.Future[None] = client.loop.create_future()
        self._outbox.append((future, routing_key, body, properties, request))
        if not self._outbox_scheduled:
            self._outbox_scheduled = True
            # If the connection just ended, on_end (queued on this loop) fails the outbox.
            client.call(lambda: self._flush_outbox(client))
        return future

    def _on_reply_here(self, correlation_id: str | None, envelope: Envelope) -> None:
        future = self._replies.pop(correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(envelope)

    def _on_end(self, generation: int, error: BridgeError) -> None:
        """The connection ended: the pika thread is gone, fail everything it held."""
        if generation != self._generation:
            return
        if self._client is not None:
            log.warning("amqp sink %s: %s", self._route_name, error)
            self._client = None
            self._down = f"amqp: sink not connected ({error})"
        confirmed, self._confirmed = self._confirmed, []
        completions = self._completions
        if completions is not None:  # confirmed just before the end, not yet handed over
            completions.settle_all(confirmed)
            completions.flush()
        lost = [item[0] for item in self._pending.values()]
        lost.extend(item[0] for item in self._outbox)
        self._pending.clear()
        self._order.clear()
        self._outbox.clear()
        for future in lost:
            settle(future, error)
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(ConnectionLost(f"amqp: no reply: {error}"))

    # ------------------------------------------------------------ pika thread

    def _setup(self, client: AmqpClient) -> Steps:
        for declaration in self._declared:  # the exchange, when to.declare
            if declaration.create:
                yield from client.ensure_exchange(declaration)
        generation = self._generation

        def on_confirm(frame: Method) -> None:
            self._on_confirm(client, generation, frame)

        def on_return(
            _channel: Channel, method: Basic.Return, _properties: BasicProperties, body: bytes
        ) -> None:
            self._on_return(generation, method, body)

        yield lambda done: client.ch.confirm_delivery(on_confirm, callback=done)
        client.ch.add_on_return_callback(on_return)
        self._frames = FramePublisher.create(
            client.connection, client.ch.channel_number, self._exchange, self._mandatory
        )

    def _flush_outbox(self, client: AmqpClient) -> None:
        self._outbox_scheduled = False  # before draining: a racing _publish wakes us again
        channel = client.channel
        if channel is None or not channel.is_open:
            return  # on_end fails what is left
        outbox = self._outbox
        pending = self._pending
        order = self._order
        frames = self._frames
        out: list[bytes] = []
        add = frames.add if frames is not None else None
        tag = self._next_tag
        failed: list[tuple[asyncio.Future[None], BridgeError | None]] = []
        while outbox:
            item = outbox.popleft()
            if item[4] and not self._replying:
                self._start_replies(client, channel)
            try:
                if add is not None:
                    add(out, item[1], item[2], item[3])
                else:
                    channel.basic_publish(
                        self._exchange, item[1], item[2], item[3], self._mandatory
                    )
            except (pe.ChannelWrongStateError, pe.ConnectionWrongStateError) as exc:
                failed.append((item[0], translate(exc)))
                continue
            except Exception as exc:  # marshalling: a value AMQP cannot carry
                failed.append((item[0], MappingError(f"amqp: cannot encode the message: {exc}")))
                continue
            tag += 1
            pending[tag] = item
            order.append(tag)
        self._next_tag = tag
        if frames is not None:
            frames.write(out)
        if failed and self._completions is not None:
            self._completions.settle_all(failed)

    def _start_replies(self, client: AmqpClient, channel: Channel) -> None:
        # Frames on a channel are processed in order: this consume precedes the publish.
        generation = self._generation

        def on_reply(
            _channel: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes
        ) -> None:
            if generation != self._generation:
                return
            try:
                envelope = self._reader.envelope(method, properties, body)
            except BridgeError as exc:
                log.error(
                    "amqp sink %s: dropping an untranslatable reply: %s", self._route_name, exc
                )
                return
            client.post(self._on_reply_here, properties.correlation_id, envelope)

        channel.basic_consume(DIRECT_REPLY_TO, on_reply, auto_ack=True)
        self._replying = True

    def _on_confirm(self, client: AmqpClient, generation: int, frame: Method) -> None:
        if generation != self._generation:
            return
        method = frame.method
        tag: int = method.delivery_tag
        nack = isinstance(method, Basic.Nack)
        pending = self._pending
        order = self._order
        confirmed = self._confirmed
        returned = self._returned
        if method.multiple:
            while order and order[0] <= tag:
                done_tag = order.popleft()
                item = pending.pop(done_tag, None)
                if item is not None:
                    error = returned.pop(done_tag, None) if returned else None
                    if error is None and nack:
                        error = MessageRejected("amqp: the broker nacked the message")
                    confirmed.append((item[0], error))
        else:
            item = pending.pop(tag, None)
            if item is not None:
                error = returned.pop(tag, None) if returned else None
                if error is None and nack:
                    error = MessageRejected("amqp: the broker nacked the message")
                confirmed.append((item[0], error))
            while order and order[0] not in pending:
                order.popleft()
        if not self._confirm_scheduled:
            self._confirm_scheduled = True
            client.soon(self._flush_confirms)

    def _flush_confirms(self) -> None:
        confirmed = self._confirmed
        self._confirmed = []
        self._confirm_scheduled = False
        if confirmed and self._completions is not None:
            self._completions.settle_all(confirmed)

    def _on_return(self, generation: int, method: Basic.Return, body: bytes) -> None:
        if generation != self._generation:
            return
        routing_key = method.routing_key
        for tag in self._order:
            item = self._pending.get(tag)
            if item is None or tag in self._returned:
                continue
            if item[1] == routing_key and item[2] == body:
                self._returned[tag] = MessageRejected(
                    f"amqp: unroutable: {method.reply_code} {method.reply_text} "
                    f"(exchange {method.exchange!r}, routing key {routing_key!r})"
                )
                return
        log.warning(
            "amqp sink %s: a returned message matched no unconfirmed send", self._route_name
        )
