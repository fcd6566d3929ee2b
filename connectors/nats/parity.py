"""The NATS side of a migration, read for parity and lag (bridge.migrate.kinds.StreamSide).

`read_stream` reads the stream from a point in time to the last message it held when the
read began, through an ephemeral consumer (no acks, deleted afterwards, and removed by
the server after a minute of inactivity should this process die first), so it changes
nothing a durable consumer sees. `consumer_pending` is a durable consumer's backlog.
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from natsbridge.bridge.config.model import Model
from natsbridge.bridge.errors import BridgeError, PermanentError
from natsbridge.bridge.migrate.compare import Seen
from natsbridge.bridge.migrate.kinds import StreamMessage
from natsbridge.connectors.nats.client import NatsLink
from natsbridge.connectors.nats.config import NatsConnection
from natsbridge.connectors.nats.driver import NatsClient
from natsbridge.connectors.nats.errors import translate
from natsbridge.connectors.nats.message import from_nats_headers

Convert = Callable[[StreamMessage], Seen]

FETCH_BATCH = 500
FETCH_TIMEOUT_S = 2.0
READER_INACTIVE_S = 60.0  # the server deletes a reader this process left behind


@contextlib.asynccontextmanager
async def _connected(name: str, connection: Model, purpose: str) -> AsyncIterator[NatsClient]:
    """A NATS client on `connection` for one command; closed on the way out."""
    assert isinstance(connection, NatsConnection)
    link = await NatsLink.open(name, connection, f"natsbridge:{purpose}")
    try:
        yield link.client
    finally:
        await link.close()


async def read_stream(
    name: str, connection: Model, stream: str, since: float, convert: Convert
) -> list[Seen]:
    """Every message of `stream` stored at or after `since` (epoch seconds), in order,
    each converted as it arrives."""
    async with _connected(name, connection, "verify") as client:
        return await _read_stream(client, stream, since, convert)


async def _read_stream(
    client: NatsClient, stream: str, since: float, convert: Convert
) -> list[Seen]:
    jsm = client.jsm()
    with translate(f"reading JetStream stream {stream}"):
        try:
            info = await jsm.stream_info(stream)
        except nats.js.errors.NotFoundError:
            raise PermanentError(f"JetStream stream {stream!r} does not exist") from None
        last = info.state.last_seq
        if info.state.messages == 0:
            return []
        reader = f"natsbridge-verify-{uuid.uuid4().hex[:12]}"
        start = datetime.datetime.fromtimestamp(since, datetime.UTC)
        config = ConsumerConfig(
            name=reader,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READER_INACTIVE_S,
            mem_storage=True,
        )
        await jsm.add_consumer(stream, config)
        try:
            return await _read(client, stream, reader, last, convert)
        finally:
            with contextlib.suppress(Exception):
                await jsm.delete_consumer(stream, reader)


async def _read(
    client: NatsClient, stream: str, name: str, last: int, convert: Convert
) -> list[Seen]:
    js = client.jetstream()
    subscription = await js.pull_subscribe_bind(consumer=name, stream=stream)
    out: list[Seen] = []
    try:
        while True:
            try:
                batch = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                return out  # nothing more since the start time
            for msg in batch:
                meta = msg.metadata
                stored = StreamMessage(
                    seq=meta.sequence.stream,
                    time=meta.timestamp.timestamp(),
                    subject=msg.subject,
                    headers=from_nats_headers(msg.headers),
                    payload=msg.data,
                )
                out.append(convert(stored))
                if meta.sequence.stream >= last or meta.num_pending == 0:
                    return out
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


async def consumer_pending(name: str, connection: Model, stream: str, durable: str) -> int | None:
    """Messages `durable` has not yet been delivered plus those not acked; None if absent."""
    async with _connected(name, connection, "lag") as client:
        with translate(f"reading JetStream consumer {stream}/{durable}"):
            try:
                info = await client.jsm().consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                return None
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


def drain_source(address: str, route: str) -> dict[str, Any]:
    """STREAM/SUBJECT: the stream's messages on SUBJECT (a pattern), through a durable
    consumer named after the route (created; so is the stream, should it be missing)."""
    stream, _, subject = address.partition("/")
    if not subject:
        raise BridgeError(f"nats: a drain reads STREAM/SUBJECT, found {address!r}")
    return {"subject": subject, "jetstream": {"stream": stream, "durable": route}}


def drain_sink(address: str) -> dict[str, Any]:
    """STREAM/SUBJECT: publish on SUBJECT (a template) into the stream, created if missing."""
    stream, _, subject = address.partition("/")
    return {"subject": subject or "{{subject}}", "jetstream": {"stream": stream}}
