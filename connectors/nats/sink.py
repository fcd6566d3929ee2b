"""NATS sinks: core publish (confirmed by a batched flush) and JetStream publish (PubAck)."""

from __future__ import annotations

import abc
import asyncio
import collections
import json
import time
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import StreamInfo
from nats.js.errors import APIError

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    MessageRejected,
    PermanentError,
)
from natsbridge.bridge.threads import Confirms, failed
from natsbridge.connectors.nats.client import NatsLink, ensure_stream
from natsbridge.connectors.nats.config import JetStreamSink as JetStreamSinkConfig
from natsbridge.connectors.nats.config import NatsConnection, NatsSink
from natsbridge.connectors.nats.declare import sink_subjects, stream_config, stream_declaration
from natsbridge.connectors.nats.driver import NatsClient
from natsbridge.connectors.nats.errors import (
    NoResponders,
    api_error,
    translate,
    translate_exception,
)
from natsbridge.connectors.nats.kind import NatsOrigin as Origin
from natsbridge.connectors.nats.message import HeaderBlock, from_nats_headers, header_block
from natsbridge.mappings import subjects
from natsbridge.mappings.headers import NATS_EXPECTED_STREAM, NATS_MSG_ID
from natsbridge.mappings.payload import check_payload, effective_limit

DEFAULT_FLUSH_TIMEOUT_S = 10
DEFAULT_PUBACK_TIMEOUT_S = 10.0
DEFAULT_SWEEP_INTERVAL_S = 0.5  # how often overdue PubAcks are looked for
DEFAULT_CAPTURED_CACHE = 65_536  # subjects remembered as captured by the stream
DEFAULT_CLOSE_WAIT_S = 10.0
DEFAULT_SUBJECT_REFRESH_S = 5.0  # at most one stream-info refresh per this many seconds
NO_RESPONDERS_STATUS_LINE = b"NATS/1.0 503"


def derived_stream_subjects(template_text: str, is_literal: bool) -> list[str]:
    """Stream subjects for a sink subject template: the literal subject, or its prefix + `>`.

    `legacy.orders.{{routing_key}}` gives `legacy.orders.>`; a template whose first token
    already holds a placeholder gives `>`, which nats-server refuses: configure
    `to.jetstream.subjects` then.
    """
    if is_literal:
        return [template_text]
    literal: list[str] = []
    for token in template_text.split("."):
        if "{{" in token or (token.startswith("$") and token[1:].isdigit()):
            break
        literal.append(token)
    return [".".join([*literal, ">"])]


class _Sink(abc.ABC):
    """What both sinks share: the connection, the payload limit and header conversion."""

    def __init__(self, route: Route, connection: NatsConnection, bridge: BridgeSettings) -> None:
        assert isinstance(route.sink, NatsSink)
        self.route = route
        self.config: NatsSink = route.sink
        self.connection = connection
        self.bridge = bridge
        self.link: NatsLink | None = None
        self.limit = 0
        self.confirms = Confirms()

    async def connect(self) -> None:
        """Connect; subclasses then declare what they need."""
        await self.close()
        self.link = await NatsLink.open(
            self.config.connection, self.connection, f"{self.bridge.id}:{self.route.name}:sink"
        )
        self.limit = self.payload_limit(self.link.max_payload)

    def payload_limit(self, server_limit: int) -> int:
        """The route's `max_payload` (default 1 MiB), lowered to the server's."""
        route_limit = self.route.spec.max_payload
        return effective_limit(None if route_limit is None else int(route_limit), server_limit)

    async def client(self) -> NatsClient:
        """The connected client: waits (bounded) while reconnecting, else ConnectionLost."""
        link = self.link
        if link is None:
            raise ConnectionLost(f"route '{self.route.name}': NATS sink is not connected")
        client = link.client
        return client if client.is_connected else await link.ready()

    def encode(self, envelope: Envelope, extra: Sequence[tuple[str, str]]) -> HeaderBlock | None:
        """NATS headers for `envelope`, after checking payload and headers against the limit."""
        headers = header_block(envelope.headers, extra)
        check_payload(len(envelope.payload) + len(headers or b""), self.limit)
        return headers

    @abc.abstractmethod
    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish `envelopes` in order; each settles when the server confirmed it."""

    async def close(self) -> None:
        """Disconnect after flushing. Idempotent."""
        link, self.link = self.link, None
        if link is not None:
            await link.close()


class _GroupFlush:
    """Confirms core publishes in groups: one PING/PONG round trip covers every publish before it.

    A send waits for the next flush that starts after its message was buffered; sends
    that arrive while a flush is on the wire share the one after it. With many sends in
    flight this costs one round trip per group instead of one per message. When the
    connection drops, waiting sends fail at once with ConnectionLost (`fail`).
    """

    def __init__(self) -> None:
        self._next: list[asyncio.Future[None]] = []
        self._inflight: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    def waiter(self, client: NatsClient) -> asyncio.Future[None]:
        """A future resolved by the next flush that starts after this call."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next.append(future)
        task = self._task
        if task is None or task.done():
            self._task = asyncio.create_task(self._run(client))
        return future

    async def _run(self, client: NatsClient) -> None:
        while self._next:
            batch, self._next = self._next, []
            self._inflight = batch
            error: BaseException | None = None
            try:
                with translate("flushing to NATS"):
                    await client.flush(timeout=DEFAULT_FLUSH_TIMEOUT_S)
            except BridgeError as exc:
                error = exc if not isinstance(exc, PermanentError) else ConnectionLost(str(exc))
            self._inflight = []
            _settle(batch, error)

    def fail(self, error: BaseException) -> None:
        """Fail every waiting send with `error` and abandon the flush on the wire."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        _settle(self._inflight, error)
        _settle(self._next, error)
        self._inflight, self._next = [], []


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(type(error)(*error.args))


class CoreSink(_Sink):
    """Publishes to core NATS; a send is confirmed once a flush after it was answered.

    Core NATS has no acknowledgement: "confirmed" means the server has read the message
    (a PING sent after it came back as PONG), so it was routed to the subscribers
    connected at that moment. Flushes are grouped (`_GroupFlush`), never one per message.
    Also a Requester: `request()` waits for the first reply.
    """

    def __init__(self, route: Route, connection: NatsConnection, bridge: BridgeSettings) -> None:
        super().__init__(route, connection, bridge)
        self._flush = _GroupFlush()

    async def connect(self) -> None:
        """Connect; a dropped connection fails the sends waiting for their flush."""
        await super().connect()
        assert self.link is not None
        flush = self._flush = _GroupFlush()

        async def on_disconnect() -> None:
            flush.fail(ConnectionLost("NATS connection lost before the flush was answered"))

        self.link.on_disconnect.append(on_disconnect)

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish `envelopes` in order; each settles once a flush after it was answered."""
        waits: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            try:
                waits.append(await self._publish(envelope))
            except Exception as exc:  # this message's own error; the next may succeed
                waits.append(failed(exc))
        return await self.confirms.wait(waits)

    async def _publish(self, envelope: Envelope) -> asyncio.Future[None]:
        """Publish `envelope` to `envelope.subject`; the future settles once a flush covered it."""
        client = await self.client()
        headers = self.encode(envelope, ())
        subject = envelope.subject
        try:
            await client.publish(subject, envelope.payload, envelope.reply or "", headers)  # type: ignore[arg-type]
        except Exception as exc:  # not `translate()`: this is the hot path
            error = translate_exception(exc, f"publishing to NATS subject '{subject}'")
            if error is exc:
                raise
            raise error from exc
        return self._flush.waiter(client)

    async def request(self, envelope: Envelope, timeout: float) -> Envelope:
        """Send `envelope` as a request; the reply, BridgeTimeout, or NoResponders."""
        client = await self.client()
        headers = self.encode(envelope, ())
        with translate(f"request to NATS subject '{envelope.subject}'"):
            msg = await client.request(
                envelope.subject,
                envelope.payload,
                timeout=timeout,
                headers=headers,  # type: ignore[arg-type]
            )
        return _reply_envelope(msg, self.config.connection)

    async def close(self) -> None:
        """Wait for the last flush (bounded), then disconnect. Idempotent."""
        self._flush.fail(ConnectionLost("NATS sink closed"))
        await super().close()


def _reply_envelope(msg: Msg, connection: str) -> Envelope:
    return Envelope(
        subject=msg.subject,
        payload=msg.data,
        headers=from_nats_headers(msg.headers),
        origin=Origin(connection, "nats", subject=msg.subject),
    )


class _PubAcks:
    """Pipelined JetStream publishes: one reply inbox, a future per message, no per-message wait.

    Each publish gets a reply subject `<inbox>.<n>` from `expect()`, before the sink
    writes it; the PubAck (or error) arriving there resolves its future. One sweeper
    task fails the publishes whose PubAck is overdue (BridgeTimeout), instead of a
    timer per message.
    """

    def __init__(self) -> None:
        self._prefix = ""
        self._next = 0
        self._waiting: dict[int, tuple[asyncio.Future[None], str]] = {}  # n: (future, subject)
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, client: NatsClient) -> None:
        self._prefix = client.new_inbox() + "."
        self._sub = await client.subscribe_raw(self._prefix + "*", self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep())

    def expect(self, subject: str) -> tuple[asyncio.Future[None], str]:
        """A future for the PubAck of a publish to `subject`, and the reply subject to use.

        Register before publishing: the reply may be quick.
        """
        self._next += 1
        n = self._next
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[n] = (future, subject)
        self._deadlines.append((time.monotonic() + DEFAULT_PUBACK_TIMEOUT_S, n))
        return future, f"{self._prefix}{n}"

    def fail(self, replies: Sequence[str], error: BaseException) -> None:
        """Fail the publishes to `replies` with `error` (they never reached the wire)."""
        for reply in replies:
            waiting = self._waiting.pop(int(reply[len(self._prefix) :]), None)
            if waiting is not None and not waiting[0].done():
                waiting[0].set_exception(error)

    def _on_reply(self, subject: bytes, _reply: bytes, data: bytes, headers: bytes | None) -> None:
        """A PubAck as received (see NatsClient.subscribe_raw): settle its publish."""
        try:
            waiting = self._waiting.pop(int(subject[len(self._prefix) :]), None)
        except ValueError:
            return  # not one of our tokens
        if waiting is None:
            return
        future, published_to = waiting
        if future.done():
            return
        if headers is not None and headers.startswith(NO_RESPONDERS_STATUS_LINE):
            future.set_exception(NoResponders("no JetStream stream answered the publish"))
            return
        if data.startswith(b"{") and b'"error"' not in data:
            future.set_result(None)  # stored, or a duplicate: no need to parse it
            return
        try:
            error = json.loads(data).get("error")
        except (ValueError, AttributeError) as exc:
            future.set_exception(ConnectionLost(f"unreadable PubAck: {exc}"))
            return
        if not error:
            future.set_result(None)
            return
        refusal = APIError(
            code=error.get("code"),
            description=error.get("description"),
            err_code=error.get("err_code"),
        )
        future.set_exception(
            api_error(refusal, f"publishing to JetStream subject '{published_to}'")
        )

    async def _sweep(self) -> None:
        deadlines = self._deadlines
        while True:
            await asyncio.sleep(DEFAULT_SWEEP_INTERVAL_S)
            now = time.monotonic()
            while deadlines and deadlines[0][0] <= now:
                _, token = deadlines.popleft()
                waiting = self._waiting.pop(token, None)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_exception(
                        BridgeTimeout(f"no PubAck within {DEFAULT_PUBACK_TIMEOUT_S:g}s")
                    )

    def fail_all(self, error: BaseException) -> None:
        """Fail every publish waiting for its PubAck (the connection dropped: they may be lost)."""
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_exception(type(error)(*error.args))

    def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()


class JetStreamSink(_Sink):
    """Publishes into a JetStream stream; a send returns once its PubAck arrived.

    Sends are pipelined: many may await their PubAcks at once. `Nats-Msg-Id` is set from
    `envelope.msg_id` (JetStream drops a repeat within the stream's duplicate window;
    a PubAck with `duplicate: true` counts as success). `Nats-Expected-Stream` makes the
    server refuse to store the message in any other stream.
    """

    def __init__(self, route: Route, connection: NatsConnection, bridge: BridgeSettings) -> None:
        super().__init__(route, connection, bridge)
        assert self.config.jetstream is not None
        self.js_config: JetStreamSinkConfig = self.config.jetstream
        self._acks = _PubAcks()
        self._sending = asyncio.Lock()
        self._stream_subjects: list[str] = []
        self._captured: set[str] = set()
        self._subjects_checked_at = 0.0

    async def connect(self) -> None:
        """Connect, then bind to the stream (creating it if missing and `create`)."""
        await super().connect()
        assert self.link is not None
        self._acks = _PubAcks()
        acks = self._acks
        client = self.link.client
        try:
            info = await self._ensure_stream(client)
            await acks.start(client)
        except BaseException:
            await self.close()
            raise

        async def on_disconnect() -> None:
            acks.fail_all(ConnectionLost("NATS connection lost before the PubAck arrived"))

        self.link.on_disconnect.append(on_disconnect)
        self._remember(info)

    def _remember(self, info: StreamInfo) -> None:
        self._stream_subjects = list(info.config.subjects or [])
        self._captured.clear()
        self._subjects_checked_at = time.monotonic()
        max_msg_size = info.config.max_msg_size
        if max_msg_size is not None and max_msg_size > 0 and self.link is not None:
            self.limit = min(self.payload_limit(self.link.max_payload), max_msg_size)

    async def _ensure_stream(self, client: NatsClient) -> StreamInfo:
        declaration = stream_declaration(self.route, "to")
        assert declaration is not None
        name = self.js_config.stream
        return await ensure_stream(
            client.jsm(),
            declaration,
            f"route '{self.route.name}': JetStream stream '{name}'",
            lambda: stream_config(
                declaration,
                subjects=sink_subjects(self.route),  # raises when none can be derived
                duplicate_window=float(self.js_config.duplicate_window),
            ),
        )

    async def _check_subject(self, client: NatsClient, subject: str) -> None:
        """MessageRejected unless the stream captures `subject` (refreshing its subjects once).

        For a subject not yet in `_captured`: send_batch() looks there first, per message.
        """
        if any(subjects.match(p, subject) is not None for p in self._stream_subjects):
            if len(self._captured) >= DEFAULT_CAPTURED_CACHE:
                self._captured.clear()
            self._captured.add(subject)
            return
        if time.monotonic() - self._subjects_checked_at > DEFAULT_SUBJECT_REFRESH_S:
            with translate(f"JetStream stream '{self.js_config.stream}'"):
                self._remember(await client.jsm().stream_info(self.js_config.stream))
            if any(subjects.match(p, subject) is not None for p in self._stream_subjects):
                return
        raise MessageRejected(
            f"subject '{subject}' is not captured by JetStream stream "
            f"'{self.js_config.stream}' (subjects: {', '.join(self._stream_subjects) or 'none'})"
        )

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Publish `envelopes` in order as one write; each settles with its PubAck.

        Sends hold a lock from the first subject check to the write, so that windows
        sent while earlier ones await their PubAcks go on the wire in call order.
        """
        waits: list[asyncio.Future[None]] = []
        messages: list[tuple[str, str, HeaderBlock | None, bytes]] = []
        async with self._sending:
            try:
                client = await self.client()
            except BridgeError as exc:
                return await self.confirms.wait([failed(type(exc)(*exc.args)) for _ in envelopes])
            stream = self.js_config.stream
            for envelope in envelopes:
                try:
                    subject = envelope.subject
                    if subject not in self._captured:
                        await self._check_subject(client, subject)
                    extra = [(NATS_EXPECTED_STREAM, stream)]
                    if envelope.msg_id:
                        extra.append((NATS_MSG_ID, envelope.msg_id))
                    headers = self.encode(envelope, extra)
                except Exception as exc:  # this message's own error; the next may succeed
                    waits.append(failed(exc))
                    continue
                future, reply = self._acks.expect(subject)
                waits.append(future)
                messages.append((subject, reply, headers, envelope.payload))
            if messages:
                try:
                    await client.publish_many(messages)
                except Exception as exc:  # not `translate()`: this is the hot path
                    error = translate_exception(exc, f"publishing to JetStream stream '{stream}'")
                    self._acks.fail([reply for _, reply, _, _ in messages], error)
        return await self.confirms.wait(waits)

    async def close(self) -> None:
        """Fail what still waits for a PubAck after a bounded wait, then disconnect."""
        await self.confirms.drain(DEFAULT_CLOSE_WAIT_S, f"NATS sink of route '{self.route.name}'")
        self._acks.fail_all(ConnectionLost("NATS sink closed"))
        self._acks.stop()
        await super().close()
