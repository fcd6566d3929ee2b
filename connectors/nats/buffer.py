"""`buffer: jetstream`: each route's buffer is a stream in a NATS (JetStream) cluster.

Every replica of a bridge (same config, same bridge id) opens the same stream
`natsbridge~<bridge id>~<route>` (a `.` in a name becomes `+`): work-queue retention,
`replicas` copies, file storage, new messages refused when full (the ingest then holds
the source back). One durable pull consumer, `deliver`, is shared by every replica: a
message taken by a replica that dies is delivered again, to whichever replica asks,
after `ack_wait`. No replica owns a message. Its `max_ack_pending` is the route's
`max_in_flight`, so all replicas together have at most that many messages out: the
order bound of one process (a retry reorders within `max_in_flight`) holds for all.
Dead letters go to the companion stream `<stream>~dead-letters` (limits retention).

A stored message is the envelope's payload; its subject, headers, key, timestamp and
message id ride in one JSON header, `Bridge-Buffer` (nats-py carries one value per
header; an envelope may have several). The message id is also `Nats-Msg-Id`, so the
stream's duplicate window drops a second copy of a message with a deterministic id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.config.model import BridgeSettings
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import StoreError, StreamFull
from natsbridge.bridge.runtime.buffer import Backlog, Buffered
from natsbridge.connectors.nats.client import (
    DEFAULT_CONNECT_ATTEMPTS,
    DEFAULT_MAX_RECONNECT_ATTEMPTS,
    connect_options,
)
from natsbridge.connectors.nats.config import NatsConnection
from natsbridge.mappings.headers import decode_value, encode_value

log = logging.getLogger("natsbridge")

CONSUMER = "deliver"
ENVELOPE_HEADER = "Bridge-Buffer"
REASON_HEADER = "Bridge-Dead-Letter-Reason"
MSG_ID_HEADER = "Nats-Msg-Id"
REQUEST_TIMEOUT_S = 10.0  # a PubAck or an API answer; a node election takes a few seconds
PAYLOAD_LIMIT = 64 * 1024 * 1024  # the server's max_payload is the real limit
_FULL_CODES = {10077, 10047}  # store failed ("maximum messages/bytes exceeded"), no resources
_EXISTS_OTHERWISE = 10058  # "stream name already in use with a different configuration"


def stream_name(bridge_id: str, route_name: str) -> str:
    """The stream holding `route_name`'s buffer (`+` for `.`: neither name has a `+` or `~`)."""
    return f"natsbridge~{bridge_id}~{route_name}".replace(".", "+")


def dead_letter_stream(stream: str) -> str:
    """The companion stream of `stream`'s dead letters."""
    return f"{stream}~dead-letters"


class JetStreamBuffers:
    """One connection to the cluster that holds the buffers of the routes that name it."""

    def __init__(self, name: str, connection: NatsConnection, bridge: BridgeSettings) -> None:
        self.name = name
        self.connection = connection
        self.bridge_id = bridge.id
        self.client: Client | None = None
        self.js: JetStreamContext | None = None

    async def open(self) -> None:
        """Connect (StoreError when no server answers); nats-py reconnects from then on."""
        options = connect_options(self.connection, f"{self.bridge_id}:buffers")
        # The first connect tries each server twice and gives up (nats-py would retry an
        # unreachable cluster forever, deaf to SIGTERM); once connected, it reconnects.
        options["max_reconnect_attempts"] = DEFAULT_CONNECT_ATTEMPTS
        try:
            self.client = await nats.connect(**options, error_cb=self._error)
        except Exception as exc:
            raise StoreError(f"JetStream buffer '{self.name}': cannot connect: {exc}") from exc
        self.client.options["max_reconnect_attempts"] = DEFAULT_MAX_RECONNECT_ATTEMPTS
        self.js = self.client.jetstream(publish_async_max_pending=20_000)

    async def route(self, route: Route) -> JetStreamRouteBuffer:
        """The route's stream, dead-letter stream and consumer, created or updated."""
        assert self.js is not None and self.client is not None, "open() first"
        buffer = route.buffer
        stream = stream_name(self.bridge_id, route.name)
        context = f"JetStream buffer of route '{route.name}'"
        limits = {"max_msgs": buffer.max_msgs, "max_bytes": buffer.max_bytes}
        with _store_errors(context), _reservation_hint(context, buffer.max_bytes, buffer.replicas):
            await _ensure_stream(
                self.js,
                StreamConfig(
                    name=stream,
                    subjects=[_subject(stream)],
                    retention=RetentionPolicy.WORK_QUEUE,
                    discard=DiscardPolicy.NEW,
                    storage=StorageType.FILE,
                    num_replicas=buffer.replicas,
                    max_msg_size=PAYLOAD_LIMIT,
                    **limits,
                ),
            )
            dead = dead_letter_stream(stream)
            await _ensure_stream(
                self.js,
                StreamConfig(
                    name=dead,
                    subjects=[_subject(dead)],
                    storage=StorageType.FILE,
                    num_replicas=buffer.replicas,
                    max_msg_size=PAYLOAD_LIMIT,
                ),
            )
            config = ConsumerConfig(
                durable_name=CONSUMER,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=buffer.ack_wait,
                max_ack_pending=route.spec.max_in_flight,
                max_deliver=-1,  # the route dead-letters a message that keeps failing
                max_waiting=4096,
            )
            await self.js.add_consumer(stream, config)
            subscription = await self.js.pull_subscribe_bind(CONSUMER, stream)
            acks = _PubAcks(self.client.new_inbox(), context)
            await self.client.subscribe(f"{acks.inbox}.*", cb=acks.on_reply)
        return JetStreamRouteBuffer(self.client, stream, subscription, acks, context)

    async def close(self) -> None:
        """Send what is pending (acks) and close."""
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.flush(timeout=REQUEST_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await self.client.close()
            self.client = None

    async def _error(self, exc: Exception) -> None:
        log.debug("JetStream buffer '%s': %s", self.name, exc, extra={"event": "buffer_error"})


class JetStreamRouteBuffer:
    """One route's stream, shared consumer and dead letters (see bridge.runtime.buffer)."""

    def __init__(
        self,
        client: Client,
        stream: str,
        subscription: JetStreamContext.PullSubscription,
        acks: _PubAcks,
        context: str,
    ) -> None:
        self.client = client
        self.js = client.jetstream()
        self.acks = acks
        self.stream = stream
        self.subscription = subscription
        self.context = context
        self.taken: dict[int, Msg] = {}
        self._naks: set[asyncio.Future[None]] = set()

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        """Publish all of `envelopes` in order; return once the stream acknowledged each."""
        subject = _subject(self.stream)
        waits = []
        with _store_errors(self.context):
            try:
                for envelope in envelopes:
                    done, reply = self.acks.expect()
                    waits.append(done)
                    headers = _stored_headers(envelope)
                    await self.client.publish(subject, envelope.payload, reply, headers)
                await asyncio.wait_for(asyncio.gather(*waits), REQUEST_TIMEOUT_S)
            finally:
                self.acks.forget(waits)

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        """Up to `max_messages` messages in stream order; other replicas take others."""
        try:
            with _store_errors(self.context):
                messages = await self.subscription.fetch(max_messages, timeout)
        except StoreError as exc:
            if isinstance(exc.__cause__, TimeoutError):
                return []  # nothing to take (nats-py's TimeoutError is also asyncio's)
            raise
        taken = []
        for message in messages:
            seq = message.metadata.sequence.stream
            self.taken[seq] = message
            taken.append(Buffered(seq, _envelope(message), message.metadata.num_delivered))
        return taken

    async def settle(self, seqs: Sequence[int]) -> None:
        """Ack delivered messages; returns once the server has read the acks.

        An ack lost with the connection before that means one more delivery, never a loss.
        """
        with _store_errors(self.context):
            for seq in seqs:
                await self.taken.pop(seq).ack()
            await self.client.flush(timeout=REQUEST_TIMEOUT_S)

    def release(self) -> None:
        """Hand back every message taken and not settled: delivered again at once."""
        for message in self.taken.values():
            nak = asyncio.ensure_future(message.nak())
            self._naks.add(nak)
            nak.add_done_callback(self._naks.discard)
        self.taken.clear()

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        """Store `envelope` in the dead-letter stream with `reason`, then ack its original."""
        headers = _stored_headers(envelope)
        headers[REASON_HEADER] = json.dumps(reason)
        headers.pop(MSG_ID_HEADER, None)  # the dead letters keep every copy
        dead = dead_letter_stream(self.stream)
        with _store_errors(self.context):
            await self.js.publish(
                _subject(dead), envelope.payload, timeout=REQUEST_TIMEOUT_S, headers=headers
            )
            taken = self.taken.pop(seq, None) if seq is not None else None
            if taken is not None:
                await taken.ack()

    async def backlog(self) -> Backlog:
        """Messages in the stream (waiting or taken), the age of the oldest, stored bytes."""
        with _store_errors(self.context):
            info = await self.js.stream_info(self.stream)
            state = info.state
            age = None
            if state.messages:
                with contextlib.suppress(nats.js.errors.NotFoundError):  # settled meanwhile
                    oldest = await self.js.get_msg(self.stream, state.first_seq, next=True)
                    stored = json.loads((oldest.headers or {}).get(ENVELOPE_HEADER, "{}"))
                    age = max(0.0, time.time() - stored["b"]) if "b" in stored else None
        return Backlog(state.messages, age, state.bytes)


class _PubAcks:
    """Pipelined publishes: a reply subject and a future per message, one subscription.

    (nats-py's publish_async loses a PubAck that carries an error: its future never ends.)
    """

    def __init__(self, inbox: str, context: str) -> None:
        self.inbox = inbox
        self.context = context
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.sent = 0

    def expect(self) -> tuple[asyncio.Future[None], str]:
        self.sent += 1
        reply = f"{self.inbox}.{self.sent}"
        done = asyncio.get_running_loop().create_future()
        self.waiting[reply] = done
        return done, reply

    def forget(self, waits: Sequence[asyncio.Future[None]]) -> None:
        for done in waits:
            done.cancel()  # no-op for those that ended
        self.waiting = {reply: done for reply, done in self.waiting.items() if not done.done()}

    async def on_reply(self, message: Msg) -> None:
        done = self.waiting.pop(message.subject, None)
        if done is None or done.done():
            return
        try:
            error = json.loads(message.data).get("error") if message.data else None
        except ValueError:
            error = {"description": "unreadable PubAck"}
        if message.headers and message.headers.get("Status") == "503":
            error = {"description": "no JetStream responders"}
        if error is None:
            done.set_result(None)
            return
        text = f"{self.context}: {error.get('description', error)}"
        full = error.get("err_code") in _FULL_CODES
        done.set_exception(StreamFull(text) if full else StoreError(text))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to `config` (limits changed in the file)."""
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _EXISTS_OTHERWISE:
            raise
        await js.update_stream(config)


@contextlib.contextmanager
def _reservation_hint(context: str, max_bytes: int, replicas: int) -> Any:
    """A stream the cluster has no room for, said with what to change."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        # one server: 10047 "insufficient storage resources available"; a cluster: 10005
        # "no suitable peers for placement, insufficient storage"
        if "insufficient storage" not in (exc.description or ""):
            raise
        raise StoreError(
            f"{context}: {exc.description}: a buffer stream reserves its max_bytes "
            f"({max_bytes} bytes) on each of its {replicas} replicas' servers, beside every "
            "other stream's; lower "
            "buffer.max_bytes, delete streams no longer used (natsbridge~<bridge id>~<route>, "
            "left by routes that were removed) or give the servers more max_file_store"
        ) from exc


def _subject(stream: str) -> str:
    return f"natsbridge.buffer.{stream}"


def _stored_headers(envelope: Envelope) -> dict[str, str]:
    stored: dict[str, Any] = {
        "s": envelope.subject,
        "h": envelope.headers,
        "t": envelope.timestamp,
        "b": time.time(),  # buffered at: the backlog's age
    }
    if envelope.key is not None:
        stored["k"] = encode_value(envelope.key)
    if envelope.msg_id is not None:
        stored["i"] = envelope.msg_id
    headers = {ENVELOPE_HEADER: json.dumps(stored, separators=(",", ":"))}
    if envelope.msg_id is not None:
        headers[MSG_ID_HEADER] = envelope.msg_id
    return headers


def _envelope(message: Msg) -> Envelope:
    stored = json.loads((message.headers or {})[ENVELOPE_HEADER])
    key = stored.get("k")
    return Envelope(
        subject=stored["s"],
        payload=message.data,
        headers={name: list(values) for name, values in stored["h"].items()},
        msg_id=stored.get("i"),
        key=decode_value(key) if key is not None else None,
        timestamp=stored["t"],
    )


@contextlib.contextmanager
def _store_errors(context: str) -> Any:
    """nats-py's errors as StoreError (StreamFull when the stream is at its limits)."""
    try:
        yield
    except StoreError:
        raise
    except nats.js.errors.APIError as exc:
        text = f"{context}: {exc.description or exc}"
        if exc.err_code in _FULL_CODES:
            raise StreamFull(text) from exc
        raise StoreError(text) from exc
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise StoreError(f"{context}: {exc or type(exc).__name__}") from exc
