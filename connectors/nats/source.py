"""NATS sources: a core subscription (with queue group) and a JetStream durable pull consumer."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.client import JetStreamContext

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.connector import AckOnce, Incoming, unreadable
from natsbridge.bridge.envelope import Envelope, Headers
from natsbridge.bridge.errors import (
    ConnectionLost,
    MessageRejected,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.threads import Inbox, LoopPoster, take_up_to
from natsbridge.connectors.nats.client import NatsLink, ensure_stream
from natsbridge.connectors.nats.config import JetStreamSource as JetStreamSourceConfig
from natsbridge.connectors.nats.config import NatsConnection, NatsSource
from natsbridge.connectors.nats.declare import stream_config, stream_declaration
from natsbridge.connectors.nats.errors import StreamMissing, translate
from natsbridge.connectors.nats.kind import NatsOrigin as Origin
from natsbridge.connectors.nats.message import (
    from_nats_headers,
    header_block,
    read_header_block,
    subject_text,
)
from natsbridge.mappings.headers import NATS_MSG_ID, without_publish_directives
from natsbridge.mappings.payload import check_payload

log = logging.getLogger("natsbridge.connectors.nats")

DEFAULT_QUEUE_MESSAGES = 10_000  # received, not yet handed to receive(); at least max_in_flight
DEFAULT_PENDING_MSGS = 65_536  # nats-py's per-subscription buffer behind it, in messages
DEFAULT_PENDING_BYTES = 64 * 1024 * 1024  # ... and in bytes
DEFAULT_PULL_CAPACITY = 2048  # JetStream messages requested or received, not yet taken
DEFAULT_PULL_EXPIRES_S = 30.0  # how long a pull request waits on the server
DEFAULT_PULL_HEARTBEAT_S = 5.0  # the server's idle heartbeat on a waiting pull request
DEFAULT_SETTLE_WAIT_S = 5.0  # close() waits this long for queued acks to go out
DEFAULT_ORIGIN_CACHE = 10_000  # subjects whose Origin is kept for reuse


def _noop_ack(error: BaseException | None) -> None:
    """Core NATS has nothing to acknowledge or redeliver."""


class CoreSource:
    """Subscribes to a core NATS subject pattern in a queue group (default per bridge and route).

    nats-py delivers each message to a callback that puts it in a bounded queue;
    `receive()` takes batches from it. Core NATS has no backpressure: when the bridge
    falls behind, the queue fills, the callback waits, nats-py's per-subscription buffer
    (DEFAULT_PENDING_MSGS / DEFAULT_PENDING_BYTES) fills behind it, and then nats-py
    drops messages and reports a slow consumer (logged, counted on the link). Acks are
    no-ops. Also a Responder: `respond()` publishes to the request's reply subject.
    """

    def __init__(self, route: Route, connection: NatsConnection, bridge: BridgeSettings) -> None:
        assert isinstance(route.source, NatsSource)
        self.route = route
        self.config: NatsSource = route.source
        self.connection = connection
        self.bridge = bridge
        self.link: NatsLink | None = None
        self._inbox: Inbox[Msg] | None = None
        self._sub: Subscription | None = None
        self._origins: dict[str, Origin] = {}
        # Replicas (same config, same bridge id) share the subject instead of each
        # taking every message.
        self.queue_group = route.source.queue_group or f"natsbridge-{bridge.id}-{route.name}"

    async def connect(self) -> None:
        """Connect and subscribe; ConnectionLost when no server answers."""
        await self.close()
        link = await NatsLink.open(
            self.config.connection, self.connection, f"{self.bridge.id}:{self.route.name}:source"
        )
        inbox: Inbox[Msg] = Inbox(max(DEFAULT_QUEUE_MESSAGES, self.route.spec.max_in_flight))
        on_message = inbox.put  # blocks nats-py's delivery when full: see the class doc

        async def on_close() -> None:
            inbox.end(ConnectionLost(f"NATS connection '{link.connection_name}' is closed"))

        link.on_close.append(on_close)
        try:
            with translate(f"subscribing to NATS subject '{self.config.subject}'"):
                self._sub = await link.client.subscribe(
                    self.config.subject,
                    queue=self.queue_group,
                    cb=on_message,
                    pending_msgs_limit=DEFAULT_PENDING_MSGS,
                    pending_bytes_limit=DEFAULT_PENDING_BYTES,
                )
                await link.client.flush(timeout=5)
        except BaseException:
            await link.close()
            raise
        self.link, self._inbox = link, inbox

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` messages, waiting at most `timeout` s for the first."""
        link, inbox = self.link, self._inbox
        if link is None or inbox is None or link.closed:
            raise ConnectionLost(f"route '{self.route.name}': NATS source is not connected")
        msgs = await inbox.take(max_messages, timeout)
        return [Incoming(self._envelope(msg), _noop_ack) for msg in msgs]

    def _envelope(self, msg: Msg) -> Envelope:
        subject = msg.subject
        origin = self._origins.get(subject)
        if origin is None:  # one immutable Origin per subject, not one per message
            if len(self._origins) >= DEFAULT_ORIGIN_CACHE:
                self._origins.clear()
            origin = Origin(self.config.connection, "nats", subject=subject)
            self._origins[subject] = origin
        headers = without_publish_directives(from_nats_headers(msg.headers))
        ids = headers.get(NATS_MSG_ID) if headers else None
        return Envelope(
            subject=subject,
            payload=msg.data,
            headers=headers,
            reply=msg.reply or None,
            msg_id=ids[0] if ids else None,
            origin=origin,
        )

    async def respond(self, request: Envelope, reply: Envelope) -> None:
        """Publish `reply` to the reply subject of `request`."""
        if not request.reply:
            raise MessageRejected("the request has no reply subject to answer to")
        if self.link is None:
            raise ConnectionLost(f"route '{self.route.name}': NATS source is not connected")
        client = await self.link.ready()
        headers = header_block(reply.headers)
        check_payload(len(reply.payload) + len(headers or b""), self.link.max_payload)
        with translate(f"replying on NATS subject '{request.reply}'"):
            await client.publish(request.reply, reply.payload, headers=headers)  # type: ignore[arg-type]

    async def close(self) -> None:
        """Unsubscribe and disconnect. Idempotent."""
        link, self.link = self.link, None
        sub, self._sub = self._sub, None
        if sub is not None and link is not None and not link.client.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()
        if link is not None:
            await link.close()


class _Pulled(NamedTuple):
    """A JetStream message as the pull subscription received it (no nats-py Msg)."""

    subject: str
    reply: str  # its ack subject
    data: bytes
    headers: Headers


ACK, NAK, TERM = b"+ACK", b"-NAK", b"+TERM"


class _Settler:
    """Sends JetStream acks from one task, in the order the runtime settled the messages.

    `ack(error)` only appends to a queue (thread-safe, never blocks); the task turns
    None into +ACK, a RetryableError into -NAK with a back-off delay and anything else
    into +TERM, published to the message's ack subject. An ack that cannot be sent
    (connection down) is dropped: JetStream redelivers the message after ack_wait, so
    nothing is lost, at worst duplicated.
    """

    def __init__(self, route: Route, link: NatsLink) -> None:
        self._link = link
        self._items: collections.deque[tuple[_Pulled, BaseException | None]] = collections.deque()
        self._poster: LoopPoster[tuple[_Pulled, BaseException | None]] = LoopPoster(self._queue)
        self._wake = asyncio.Event()
        self._stopping = False
        retry = route.spec.retry
        self._initial, self._max, self._multiplier = retry.initial, retry.max, retry.multiplier
        self._task = asyncio.create_task(self._run())

    def ack_for(self, msg: _Pulled) -> AckOnce:
        return AckOnce(partial(self.put, msg))

    def put(self, msg: _Pulled, error: BaseException | None) -> None:
        """Any thread: queue the ack of `msg`; the loop sees a burst of them at once."""
        self._poster.post((msg, error))

    def _queue(self, settled: list[tuple[_Pulled, BaseException | None]]) -> None:
        self._items.extend(settled)
        self._wake.set()

    def nak_delay(self, delivered: int) -> float:
        """Seconds before a nak'd message comes back: the route's retry back-off."""
        return float(min(self._initial * self._multiplier ** max(delivered - 1, 0), self._max))

    async def _run(self) -> None:
        items = self._items
        while True:
            await self._wake.wait()
            self._wake.clear()
            answers = []
            while items:
                msg, error = items.popleft()
                if error is None:
                    answer = ACK
                elif isinstance(error, RetryableError):
                    delay = self.nak_delay(parse_ack_subject(msg.reply).delivered)
                    answer = NAK + b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
                else:
                    answer = TERM
                answers.append((msg.reply, "", None, answer))
            if answers:
                try:
                    await self._link.client.publish_many(answers)
                except (nats.errors.Error, OSError) as exc:
                    log.debug("JetStream acks not sent (redelivered after ack_wait): %s", exc)
            if self._stopping:
                return

    async def stop(self, wait: float = DEFAULT_SETTLE_WAIT_S) -> None:
        """Send what is queued (bounded by `wait` s), then stop."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), wait)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


PENDING_MSGS = "Nats-Pending-Messages"  # what an ended pull request had left to deliver
FATAL_STATUS = ("400", "503")  # bad request; no responders: no consumer (or JetStream) there
FATAL_409 = ("Consumer Deleted", "Consumer is push based", "Exceeded MaxRequest")


class _Puller:
    """Keeps a JetStream consumer's messages flowing into an `Inbox`: a streaming pull.

    One subscription to a private inbox receives all the server sends for the consumer:
    messages (their reply is the ack subject) and status messages (no reply, a `Status`
    header). Pull requests to $JS.API.CONSUMER.MSG.NEXT.<stream>.<durable> ask for
    `batch` messages each, to be delivered to that inbox. Credit is what was requested
    and not yet delivered (`outstanding`) plus what was delivered and not yet taken
    (the inbox); `refill()` tops it up to `capacity` and runs after every `take()`, so
    the server never gets more than `capacity` ahead of receive(): backpressure.

    A request ends when filled, or with a status giving back what it had left: 408
    (expired) or 409 Leadership Change / Server Shutdown carry Nats-Pending-Messages;
    a request refused outright (409 Exceeded MaxWaiting) gives back all of it. A lost
    connection forgets every request (credit 0, new requests once it is back). A
    consumer deleted or refused (409 Consumer Deleted, push based, a MaxRequest limit;
    400; 503 no responders) closes the inbox with `error`. If nothing, not even the
    idle heartbeat, arrives for two heartbeats while credit is outstanding, the
    requests are taken as lost and made again.
    """

    def __init__(self, link: NatsLink, subject: str, capacity: int) -> None:
        self.link = link
        self.subject = subject
        self.capacity = capacity
        self.batch = max(1, capacity // 4)
        self.inbox: Inbox[_Pulled] = Inbox(capacity)
        self.outstanding = 0
        self.error: str | None = None
        self._loop = asyncio.get_running_loop()
        self._heard = self._loop.time()
        self._reply = link.client.new_inbox()
        self._request = json.dumps(
            {
                "batch": self.batch,
                "expires": int(DEFAULT_PULL_EXPIRES_S * 1e9),
                "idle_heartbeat": int(DEFAULT_PULL_HEARTBEAT_S * 1e9),
            }
        ).encode()
        self._sub: Subscription | None = None
        self._refilling: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Subscribe to the inbox and send the first pull requests."""
        self._sub = await self.link.client.subscribe_raw(self._reply, self._on_message)
        self.link.on_disconnect.append(self._forget)
        self.link.on_close.append(self._closed)
        await self.refill()

    async def refill(self) -> None:
        """Send pull requests while a whole `batch` of credit is free."""
        client = self.link.client
        if self.error is not None or not client.is_connected:
            return  # while reconnecting nats-py would buffer them, for a server that forgot us
        while self.capacity - len(self.inbox.items) - self.outstanding >= self.batch:
            self.outstanding += self.batch  # before the await: a concurrent refill sees it
            try:
                await client.publish(self.subject, self._request, reply=self._reply)
            except (nats.errors.Error, OSError) as exc:
                self.outstanding = max(0, self.outstanding - self.batch)
                log.debug("JetStream pull request not sent: %s", exc)
                return

    async def take(self, max_items: int, timeout: float) -> list[_Pulled]:
        """Up to `max_items` messages in stream order, waiting up to `timeout` s for the first."""
        await self.refill()
        msgs = await self.inbox.take(max_items, timeout)
        if msgs:
            self._heard = self._loop.time()
            await self.refill()
        elif self.outstanding and self._loop.time() - self._heard > 2 * DEFAULT_PULL_HEARTBEAT_S:
            log.debug("no heartbeat from JetStream consumer: pulling again")
            self._heard = self._loop.time()
            self.outstanding = 0
        return msgs

    def _on_message(self, subject: bytes, reply: bytes, data: bytes, raw: bytes | None) -> None:
        """One message on the inbox, as received (see NatsClient.subscribe_raw)."""
        code, text, headers = read_header_block(raw) if raw else ("", "", {})
        if reply:  # a stream message (the reply is its ack subject)
            if self.outstanding:
                self.outstanding -= 1
            # Credit bounds what arrives, so this never overfills the inbox for long.
            # Inside nats-py's read loop: nothing here may raise (see subject_text).
            self.inbox.append(_Pulled(subject_text(subject), subject_text(reply), data, headers))
            return
        self._heard = self._loop.time()
        if code == "100":  # idle heartbeat
            return
        if code in FATAL_STATUS or (code == "409" and text.startswith(FATAL_409)):
            reason = text or ("no responders" if code == "503" else "refused")
            self.error = f"pulling from {self.subject}: {code} {reason}"
            self.inbox.end(ConnectionLost(self.error))
            return
        left = headers.get(PENDING_MSGS)
        self.outstanding = max(0, self.outstanding - (int(left[0]) if left else self.batch))
        if left:
            self._refilling = asyncio.ensure_future(self.refill())  # kept until it is done
        elif code != "404":  # a refused request is made again by the next take()
            log.debug("JetStream pull request refused: %s %s", code, text)

    async def _forget(self) -> None:
        self.outstanding = 0

    async def _closed(self) -> None:
        self.inbox.end(ConnectionLost(f"NATS connection '{self.link.connection_name}' is closed"))

    async def stop(self, wait: float = DEFAULT_SETTLE_WAIT_S) -> list[_Pulled]:
        """Stop pulling (process what is on its way, bounded by `wait` s); return the untaken."""
        self.error = self.error or "stopped"
        sub, self._sub = self._sub, None
        if sub is not None and not self.link.client.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await asyncio.wait_for(sub.drain(), wait)  # type: ignore[no-untyped-call]
        return take_up_to(self.inbox.items, len(self.inbox.items))


class JetStreamSource:
    """Consumes a JetStream stream through a durable pull consumer.

    On connect: the stream is looked up (created with subjects [from.subject] when
    missing and `create`), then the durable consumer `durable` (default
    natsbridge-<route>) is bound, or created with explicit acks, `ack_wait`,
    `max_deliver` and filter subject from.subject. Messages stream in through a
    `_Puller`, at most min(max_in_flight, 2048) ahead of `receive()` (ack_wait counts from
    their delivery to the bridge). The consumer lives on the server: after a reconnect or
    a nats-server restart, delivery resumes where it was, and messages not acked within
    ack_wait come back. After max_deliver deliveries the server stops
    redelivering a message (it stays in the stream).
    """

    def __init__(self, route: Route, connection: NatsConnection, bridge: BridgeSettings) -> None:
        assert isinstance(route.source, NatsSource) and route.source.jetstream is not None
        self.route = route
        self.config: NatsSource = route.source
        self.js_config: JetStreamSourceConfig = route.source.jetstream
        self.connection = connection
        self.bridge = bridge
        self.durable = self.js_config.durable or f"natsbridge-{route.name}"
        self.link: NatsLink | None = None
        self._puller: _Puller | None = None
        self._settler: _Settler | None = None

    async def connect(self) -> None:
        """Connect, bind (or create) stream and durable consumer, start the ack task."""
        await self.close()
        link = await NatsLink.open(
            self.config.connection, self.connection, f"{self.bridge.id}:{self.route.name}:source"
        )
        try:
            js = link.client.jetstream()
            await self._ensure_stream(js)
            await self._ensure_consumer(js)
            subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.js_config.stream}.{self.durable}"
            capacity = max(1, min(DEFAULT_PULL_CAPACITY, self.route.spec.max_in_flight))
            puller = _Puller(link, subject, capacity)
            with translate(f"pulling from JetStream consumer '{self.durable}'"):
                await puller.start()
        except BaseException:
            await link.close()
            raise
        self.link, self._puller = link, puller
        self._settler = _Settler(self.route, link)

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        declaration = stream_declaration(self.route, "from")
        assert declaration is not None
        await ensure_stream(
            js,
            declaration,
            f"route '{self.route.name}': JetStream stream '{self.js_config.stream}'",
            lambda: stream_config(declaration, [self.config.subject]),
        )

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        stream, durable = self.js_config.stream, self.durable
        context = f"route '{self.route.name}': JetStream consumer '{durable}' on stream '{stream}'"
        try:
            with translate(context):
                info = await js.consumer_info(stream, durable)
            if info.config.deliver_subject:
                raise PermanentError(
                    f"{context} is a push consumer (deliver_subject "
                    f"'{info.config.deliver_subject}'); natsbridge needs a pull consumer"
                )
            if info.config.filter_subject not in (None, "", self.config.subject):
                log.warning(
                    "%s filters on '%s', not on from.subject '%s'; using it as it is",
                    context,
                    info.config.filter_subject,
                    self.config.subject,
                )
            # Replicas share the consumer: what another one holds un-acked is in flight.
            if info.num_ack_pending and self.js_config.create and self.bridge.replica is None:
                await self._rewind(js, info, context)
            return
        except StreamMissing:
            if not self.js_config.create:
                raise StreamMissing(
                    f"{context} does not exist and from.jetstream.create is false"
                ) from None
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=float(self.js_config.ack_wait),
            max_deliver=self.js_config.max_deliver,
            filter_subject=self.config.subject,
            max_ack_pending=max(self.route.spec.max_in_flight * 2, 1000),
        )
        with translate(f"{context}: creating it"):
            await js.add_consumer(stream, config)

    async def _rewind(self, js: JetStreamContext, info: ConsumerInfo, context: str) -> None:
        """Re-create the consumer at its ack floor, so unacked messages come back first.

        Messages a bridge held unacked when it stopped or died (pulled ahead and never
        taken, or never settled) would otherwise come back after ack_wait behind newer
        ones, or (nak'd on close) in the server's redelivery order, which is not stream
        order. Starting again right after the ack floor delivers them first and in order
        (anything acked above the floor comes again: a duplicate, never a loss). Only for
        consumers the bridge manages (`create: true`) and read by this process alone: with
        `bridge.replica` set, the others' in-flight messages would all come again, so a dead
        replica's come back after ack_wait instead (replicas promise no order).
        """
        start = info.ack_floor.stream_seq + 1 if info.ack_floor else 1
        # Info, not warning: a clean stop leaves pulled-ahead messages unacked too.
        log.info(
            "%s: %d messages were delivered but never acked (pulled ahead by a bridge that "
            "stopped, or never settled); re-creating the consumer from stream sequence %d "
            "to keep order",
            context,
            info.num_ack_pending,
            start,
        )
        config = dataclasses.replace(
            info.config, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        )
        with translate(f"{context}: re-creating it from stream sequence {start}"):
            await js.delete_consumer(self.js_config.stream, self.durable)
            await js.add_consumer(self.js_config.stream, config)

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` pulled messages; [] when none arrive within `timeout` s."""
        link, puller, settler = self.link, self._puller, self._settler
        if link is None or puller is None or settler is None or link.closed:
            raise ConnectionLost(f"route '{self.route.name}': JetStream source is not connected")
        try:
            msgs = await puller.take(max_messages, timeout)
        except ConnectionLost as exc:
            raise ConnectionLost(f"route '{self.route.name}': {exc}") from None
        connection, ack_for = self.config.connection, settler.ack_for
        return [_js_incoming(msg, connection, ack_for(msg)) for msg in msgs]

    async def close(self) -> None:
        """Send queued acks (bounded), give back what was pulled but not taken, disconnect.

        Messages pulled ahead and never handed to receive() are nak'd, so that they come
        back at once rather than after ack_wait (in the server's redelivery order; with
        `create`, the next connect rewinds to restore stream order). Idempotent.
        """
        link, self.link = self.link, None
        puller, self._puller = self._puller, None
        settler, self._settler = self._settler, None
        if settler is not None:
            await settler.stop()
        if puller is not None and link is not None:
            for msg in await puller.stop():
                if link.client.is_closed:
                    break
                with contextlib.suppress(nats.errors.Error, OSError):
                    await link.client.publish(msg.reply, NAK)
        if link is not None:
            await link.close()


class AckSubject(NamedTuple):
    """What the ack subject (the reply) of a JetStream message says about the message."""

    stream: str
    consumer: str
    delivered: int  # times delivered, this one included
    stream_seq: int
    consumer_seq: int
    timestamp_ns: int  # when the stream stored it, ns since the epoch
    pending: int  # messages left for the consumer after this one


def parse_ack_subject(reply: str) -> AckSubject:
    """Parse `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>` (9 tokens).

    Or the newer form with `<domain>.<account hash>` after `$JS.ACK` and a random token
    at the end, which servers may omit or extend: 11 tokens or more, read from the left.
    Cheaper than nats-py's `msg.metadata` (no dataclasses, no datetime). Raises
    ValueError when `reply` is not an ack subject.
    """
    tokens = reply.split(".")
    count = len(tokens)
    if count == 9:
        at = 2
    elif count >= 11:
        at = 4
    else:
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    if tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return AckSubject(
        tokens[at],
        tokens[at + 1],
        int(tokens[at + 2]),
        int(tokens[at + 3]),
        int(tokens[at + 4]),
        int(tokens[at + 5]),
        int(tokens[at + 6]),
    )


def _js_incoming(msg: _Pulled, connection: str, ack: AckOnce) -> Incoming:
    """The Incoming of a pulled message; one that cannot be read is dead-lettered, not lost."""
    try:
        return Incoming(_js_envelope(msg, connection), ack)
    except Exception as exc:
        origin = Origin(connection, "nats", subject=msg.subject)
        envelope = Envelope(subject=msg.subject, payload=msg.data, origin=origin)
        return unreadable(envelope, ack, exc, "nats")


def _js_envelope(msg: _Pulled, connection: str) -> Envelope:
    ids = msg.headers.get(NATS_MSG_ID)
    ack = parse_ack_subject(msg.reply)
    return Envelope(
        subject=msg.subject,
        payload=msg.data,
        headers=without_publish_directives(msg.headers),
        msg_id=ids[0] if ids else None,
        origin=Origin(connection, "nats", subject=msg.subject, stream_seq=ack.stream_seq),
        timestamp=ack.timestamp_ns / 1e9,
    )
