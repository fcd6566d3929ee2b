"""The default buffer backend: the embedded broker (bridge.broker), on local disk.

Each route gets a work-queue stream named after the route, with one durable pull
consumer and a dead-letter stream `<route>.dead-letters`. What the runtime needs of an
envelope beyond subject, payload, headers and message id (the rendered Kafka key, the
source timestamp) rides in two buffer-private headers that are removed again on take.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Sequence
from pathlib import Path

from natsbridge.bridge.broker.broker import Broker, Msg
from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    Discard,
    Outgoing,
    Retention,
    StreamConfig,
)
from natsbridge.bridge.broker.store import DB_NAME
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.envelope import Envelope, Headers
from natsbridge.bridge.runtime.buffer import Backlog, Buffered
from natsbridge.mappings.headers import (
    BRIDGE_BUFFER_KEY,
    BRIDGE_BUFFER_TIME,
    decode_value,
    encode_value,
    escape_first,
)

log = logging.getLogger("natsbridge")

CONSUMER = "deliver"
DEAD_LETTER_SUFFIX = ".dead-letters"
# The deliver loop retries a window in process; redelivery by ack wait only matters
# after a restart, when every unacked message is handed out again anyway.
ACK_WAIT_S = 3600.0
PAYLOAD_LIMIT = 64 * 1024 * 1024  # the sink enforces the target's own, smaller limit


def dead_letter_stream(route_name: str) -> str:
    """The name of a route's dead-letter stream."""
    return f"{route_name}{DEAD_LETTER_SUFFIX}"


class EmbeddedBuffers:
    """Opens the data dir's broker once and hands each route its buffer."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.broker: Broker | None = None

    async def open(self) -> None:
        """Open (or create, 0700) the store; StoreError with the cause when it cannot."""
        self.broker = await Broker.open(self.data_dir)
        # An existing file keeps its mode (made by an older version, or shared on
        # purpose); the messages in it are what others must not read.
        mode = stat.S_IMODE((self.data_dir / DB_NAME).stat().st_mode)
        if mode & stat.S_IROTH:
            log.warning(
                "%s is readable by other users (mode %o) and holds message payloads: "
                "consider chmod 600 (its -wal and -shm files follow its mode)",
                self.data_dir / DB_NAME,
                mode,
                extra={"event": "data_dir_mode"},
            )

    async def route(self, route: Route) -> EmbeddedRouteBuffer:
        """The buffer of `route`, created on first use and kept across restarts."""
        assert self.broker is not None, "open() first"
        limits = route.buffer
        await self.broker.add_stream(
            StreamConfig(
                name=route.name,
                retention=Retention.WORKQUEUE,
                max_msgs=limits.max_msgs,
                max_bytes=limits.max_bytes,
                discard=Discard.HOLD,  # full: the ingest waits, holding the source back
                max_msg_size=PAYLOAD_LIMIT,
                dead_letter=dead_letter_stream(route.name),
            )
        )
        await self.broker.add_consumer(
            route.name,
            ConsumerConfig(
                name=CONSUMER,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=max(2 * route.spec.max_in_flight, 1000),
            ),
        )
        return EmbeddedRouteBuffer(self.broker, route.name)

    async def close(self) -> None:
        """Commit what is queued and close the store."""
        if self.broker is not None:
            await self.broker.close()
            self.broker = None


class EmbeddedRouteBuffer:
    """One route's stream, consumer and dead letters (see bridge.runtime.buffer)."""

    def __init__(self, broker: Broker, stream: str) -> None:
        self.broker = broker
        self.stream = stream
        self.taken: dict[int, Msg] = {}

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        """Append all of `envelopes` with one durable commit."""
        await self.broker.publish_many(
            self.stream,
            [Outgoing(e.subject, e.payload, _stored_headers(e), e.msg_id) for e in envelopes],
        )

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        """Up to `max_messages` messages in stream order (redeliveries first)."""
        messages = await self.broker.fetch(self.stream, CONSUMER, max_messages, timeout)
        for message in messages:
            self.taken[message.seq] = message
        return [Buffered(m.seq, _envelope(m), m.deliveries) for m in messages]

    async def settle(self, seqs: Sequence[int]) -> None:
        """Ack delivered messages; the writer commits them with its next batch."""
        for seq in seqs:
            self.taken.pop(seq).ack()

    def release(self) -> None:
        """Hand back every message taken and not settled: it is delivered again at once.

        For a route stopped before its sends were settled (a reload's drain timed out),
        so that the route started in its place need not wait for the ack wait.
        """
        for message in self.taken.values():
            message.nak()
        self.taken.clear()

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        """Move a taken message, or write an unbuffered one, to the dead letters."""
        if seq is not None:
            taken = self.taken.pop(seq, None)  # None when retried after a failed flush
            if taken is not None:
                taken.term(reason)
            await self.broker.flush()
            return
        await self.broker.dead_letter(
            self.stream, envelope.subject, envelope.payload, _stored_headers(envelope), reason
        )

    async def backlog(self) -> Backlog:
        """Messages stored and not yet delivered, and the age of the oldest."""
        info = await self.broker.consumer_info(self.stream, CONSUMER)
        stored = await self.broker.stream_info(self.stream)
        return Backlog(info.num_pending + info.num_ack_pending, info.oldest_age, stored.bytes)


def _stored_headers(envelope: Envelope) -> Headers:
    """The headers a message is stored with: its own, then the buffer-private ones.

    A message's own header that has a buffer-private name (a producer can send anything)
    is kept under its name with the first letter escaped (``%42ridge-Buffer-Key``, which
    a legacy sink turns back into the original): the buffer reads only what it wrote.
    """
    headers = dict(envelope.headers)
    for name in _BUFFER_PRIVATE:
        if name in headers:
            headers[escape_first(name)] = headers.pop(name)
    if envelope.key is not None:
        headers[BRIDGE_BUFFER_KEY] = [encode_value(envelope.key)]
    headers[BRIDGE_BUFFER_TIME] = [repr(envelope.timestamp)]
    return headers


_BUFFER_PRIVATE = (BRIDGE_BUFFER_KEY, BRIDGE_BUFFER_TIME)


def _envelope(message: Msg) -> Envelope:
    headers = dict(message.headers)
    key = headers.pop(BRIDGE_BUFFER_KEY, None)
    stamp = headers.pop(BRIDGE_BUFFER_TIME, None)
    return Envelope(
        subject=message.subject,
        payload=message.payload,
        headers=headers,
        msg_id=message.msg_id,
        key=decode_value(key[0]) if key else None,
        timestamp=float(stamp[0]) if stamp else message.time,
    )
