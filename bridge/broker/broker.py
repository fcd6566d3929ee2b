"""The embedded broker's asyncio API: one writer thread, group commit, batched wake-ups.

Lifecycle: `broker = await Broker.open(data_dir)` starts the writer thread (its code is
in bridge.broker.writer, the base class of `Broker`), which opens the `Store`
(bridge.broker.store) and owns it until `await broker.close()`. Every call
becomes an operation on a queue; the writer takes everything queued (up to
`BrokerOptions.max_batch` operations), applies it to the store, commits once, and then
resolves all the callers' futures with a single `call_soon_threadsafe`. So:

* `await publish(...)` returns only once the message is durable (its transaction is
  committed, fsynced with ``synchronous=FULL``), and many concurrent publishers share one
  commit. `publish_many` appends a batch as one operation and one future.
* `fetch` hands out messages whose delivery (the consumer's cursor) is committed.
* `Msg.ack()`, `nak()`, `term()` and `in_progress()` queue the operation and return at
  once (no future, no wake-up); they are applied and committed with the next batch.
  `await Msg.ack_sync()` or `await broker.flush()` waits until they are durable. An ack
  lost in a crash means the message is delivered again (at-least-once), never lost.
* No SQLite call ever runs on the event loop.

Cancelling an awaiting caller does not withdraw its operation: a cancelled publish may
still be stored, a cancelled fetch may still deliver (the messages come back after their
ack wait). After a storage error (disk full, an I/O error) the writer reopens the store
at its last commit, retrying with back-off until it opens: meanwhile calls raise
StoreError (the caller retries), acks wait to be applied to the reopened store, and a
message handed out before keeps its ack deadline. A damaged file (StoreCorrupted) fails
the broker for good: every call raises StoreError until it is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    ConsumerInfo,
    Outgoing,
    PubAck,
    StoredMessage,
    StreamConfig,
    StreamInfo,
)
from natsbridge.bridge.broker.state import FetchResult
from natsbridge.bridge.broker.store import Store, decode_headers
from natsbridge.bridge.broker.writer import (
    CLOSE,
    PUBLISH_EACH,
    BrokerOptions,
    Op,
    Signal,
    Writer,
)
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import NotFound, StoreError
from natsbridge.mappings.subjects import Sublist

log = logging.getLogger("natsbridge.broker")

T = TypeVar("T")


class Msg:
    """A delivered message, carrying its own ack functions (a second ack is harmless)."""

    __slots__ = (
        "_broker",
        "_done",
        "_handle",
        "_headers",
        "_raw_headers",
        "consumer",
        "deliveries",
        "msg_id",
        "payload",
        "seq",
        "stream",
        "subject",
        "time_ns",
    )

    def __init__(
        self,
        broker: Broker,
        handle: object,
        stream: str,
        consumer: str,
        row: tuple[int, int, str, str | None, str | None, bytes, int],
    ) -> None:
        """Built by Broker.fetch."""
        self._broker = broker
        self._handle = handle
        self.stream = stream
        self.consumer = consumer
        (
            self.seq,
            self.time_ns,
            self.subject,
            self.msg_id,
            self._raw_headers,
            self.payload,
            self.deliveries,
        ) = row
        self._headers: Headers | None = None
        self._done = False

    @property
    def headers(self) -> Headers:
        """The message's headers (decoded on first use)."""
        if self._headers is None:
            self._headers = decode_headers(self._raw_headers)
        return self._headers

    @property
    def time(self) -> float:
        """Unix seconds at which the message was appended."""
        return self.time_ns / 1e9

    def __repr__(self) -> str:
        return (
            f"Msg(stream={self.stream!r}, seq={self.seq}, subject={self.subject!r}, "
            f"deliveries={self.deliveries}, {len(self.payload)} bytes)"
        )

    def ack(self) -> None:
        """Done with the message: it is not delivered again (once the ack is committed)."""
        if not self._done:
            self._done = True
            self._broker._ack(self._handle, self.seq, self.stream)

    def nak(self, delay: float | None = None) -> None:
        """Deliver the message again after `delay` seconds (default: at once)."""
        if not self._done:
            self._done = True
            self._broker._enqueue(
                (Store.nak_handle, None, (self._handle, self.seq, delay)), self.stream
            )

    def term(self, reason: str = "terminated") -> None:
        """Give up on the message: it moves to the stream's dead-letter stream with `reason`."""
        if not self._done:
            self._done = True
            self._broker._enqueue(
                (Store.term_handle, None, (self._handle, self.seq, reason)), self.stream
            )

    def in_progress(self) -> None:
        """Still working on it: restart the ack wait."""
        if not self._done:
            self._broker._enqueue((Store.in_progress_handle, None, (self._handle, self.seq)), None)

    async def ack_sync(self) -> None:
        """ack(), then wait until the ack is durable."""
        self.ack()
        await self._broker.flush()


def _resolve_later(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Broker(Writer):
    """JetStream-style durable streams and pull consumers on SQLite, for one process."""

    def __init__(self, data_dir: Path, options: BrokerOptions) -> None:
        """Use `await Broker.open(...)`."""
        self.data_dir = data_dir
        self.options = options
        self._loop = asyncio.get_running_loop()
        self._queue = queue.SimpleQueue()
        self._put = self._queue.put
        # Publishes and acks made during one loop iteration travel as one operation,
        # sent by a callback at the end of the iteration: one queue item and one writer
        # wake-up for a whole burst instead of one per message.
        self._publishes: list[tuple[str, str, bytes, Headers | None, str | None]] = []
        self._published: list[asyncio.Future[PubAck]] = []  # their futures, in step
        self._acks: list[tuple[object, int]] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failure = None
        self._unavailable = False  # between a storage error and the next commit that works
        self._signals = {}
        self._subjects: Sublist[str] = Sublist()
        self._configs: dict[str, StreamConfig] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, data_dir: Path | str, options: BrokerOptions | None = None) -> Broker:
        """Open (or create) the buffer in `data_dir`; StoreCorrupted for a damaged file."""
        broker = cls(Path(data_dir), options or BrokerOptions())
        opened: asyncio.Future[list[StreamConfig]] = broker._loop.create_future()
        broker._thread = threading.Thread(
            target=broker._run, args=(opened,), name="natsbridge-broker", daemon=True
        )
        broker._thread.start()
        for config in await opened:
            broker._remember(config)
        return broker

    async def close(self) -> None:
        """Apply and commit everything queued, then close the database (idempotent)."""
        if self._closed:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._send((CLOSE, fut, ()))
        self._closed = True
        try:
            await fut
        finally:
            thread = self._thread
            if thread is not None:
                await asyncio.to_thread(thread.join)
            for signal in self._signals.values():
                signal.notify()

    async def __aenter__(self) -> Broker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def failure(self) -> BaseException | None:
        """The storage error that stopped the broker, if any."""
        return self._failure

    def _check(self) -> None:
        if self._failure is not None:
            raise StoreError(f"embedded broker failed: {self._failure}") from self._failure
        if self._closed:
            raise StoreError("embedded broker is closed")

    def _send(self, op: Op) -> None:
        """Queue `op` for the writer, after the publishes and acks coalesced so far."""
        if self._publishes or self._acks:
            self._send_coalesced()
        self._put(op)

    def _send_coalesced(self) -> None:
        if self._publishes:
            self._put((PUBLISH_EACH, None, (self._publishes, self._published)))
            self._publishes = []
            self._published = []
        if self._acks:
            self._put((_ack_all, None, (self._acks,)))
            self._acks = []

    def _enqueue(self, op: Op, stream: str | None) -> None:
        """Queue a fire-and-forget operation; wake fetchers that may now get a message."""
        if self._closed or self._failure is not None:
            log.debug("broker closed: dropping %s", op[0].__name__)
            return
        self._send(op)
        if stream is not None:
            signal = self._signals.get(stream)
            if signal is not None and signal.waiters:
                signal.notify()

    def _ack(self, handle: object, seq: int, stream: str) -> None:
        if self._closed or self._failure is not None:
            return
        if not self._acks and not self._publishes:
            self._loop.call_soon(self._send_coalesced)
        self._acks.append((handle, seq))
        signal = self._signals.get(stream)
        if signal is not None and signal.waiters:
            signal.notify()

    async def _submit(self, op: Op) -> Any:
        self._check()
        self._send(op)
        return await op[1]

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(store, *args)` on the writer thread, in order with everything else."""
        fut: asyncio.Future[T] = self._loop.create_future()
        return cast(T, await self._submit((fn, fut, args)))

    # ------------------------------------------------------------------ streams and consumers

    def _remember(self, config: StreamConfig) -> None:
        old = self._configs.pop(config.name, None)
        if old is not None:
            for pattern in old.subjects:
                self._subjects.remove(pattern, old.name)
        self._configs[config.name] = config
        for pattern in config.subjects:
            self._subjects.insert(pattern, config.name)

    async def add_stream(self, config: StreamConfig) -> StreamInfo:
        """Create or update a stream (see Store.add_stream)."""
        info = await self._call(Store.add_stream, config)
        self._remember(config)
        if config.dead_letter is not None and config.dead_letter not in self._configs:
            self._remember(StreamConfig(name=config.dead_letter))
        return info

    async def delete_stream(self, name: str) -> None:
        """Delete a stream with its messages and consumers."""
        await self._call(Store.delete_stream, name)
        config = self._configs.pop(name, None)
        if config is not None:
            for pattern in config.subjects:
                self._subjects.remove(pattern, name)

    async def add_consumer(self, stream: str, config: ConsumerConfig) -> ConsumerInfo:
        """Create or update a durable pull consumer of `stream`."""
        return await self._call(Store.add_consumer, stream, config)

    async def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a consumer (its messages stay in the stream)."""
        await self._call(Store.delete_consumer, stream, name)

    def stream_names(self) -> list[str]:
        """Names of every stream, sorted."""
        return sorted(self._configs)

    def stream_for(self, subject: str) -> str:
        """The stream whose subjects match `subject` (the first by name if several)."""
        found = self._subjects.match(subject)
        if not found:
            raise NotFound(f"no stream takes subject {subject!r}")
        return min(found)

    async def stream_info(self, name: str) -> StreamInfo:
        """Counters, sequences and consumers of `name`."""
        return await self._call(Store.stream_info, name)

    async def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """Position and counters of one consumer."""
        return await self._call(Store.consumer_info, stream, name)

    async def streams(self) -> list[StreamInfo]:
        """stream_info of every stream."""
        return await self._call(Store.streams)

    # ------------------------------------------------------------------ publish

    def publish(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None = None,
        msg_id: str | None = None,
    ) -> asyncio.Future[PubAck]:
        """Queue a message for `stream`; the future resolves once it is durable.

        `await broker.publish(...)` is the usual form; the message is queued when
        publish() is called, not when the future is awaited. A message id already seen
        within the duplicate window resolves to the earlier PubAck with duplicate=True.
        The future fails with NotFound, PayloadTooLarge, SubjectError, StreamFull or
        StoreError.
        """
        if self._failure is not None or self._closed:
            self._check()
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        fut: asyncio.Future[PubAck] = self._loop.create_future()
        if not self._publishes and not self._acks:
            self._loop.call_soon(self._send_coalesced)
        self._publishes.append((stream, subject, payload, headers, msg_id))
        self._published.append(fut)
        return fut

    async def publish_many(self, stream: str, messages: Sequence[Outgoing]) -> list[PubAck]:
        """Append a batch to `stream`, all or nothing, with one durable commit."""
        checked = [
            m if type(m.payload) is bytes else m._replace(payload=_as_bytes(m.payload))
            for m in messages
        ]
        return await self._call(Store.publish_many, stream, checked)

    async def dead_letter(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None,
        reason: str,
    ) -> PubAck:
        """Write a message that never reached `stream` into its dead-letter stream."""
        return await self._call(
            Store.dead_letter, stream, subject, _as_bytes(payload), headers, reason
        )

    # ------------------------------------------------------------------ consume

    async def fetch(
        self, stream: str, consumer: str, batch: int = 1, timeout: float = 5.0
    ) -> list[Msg]:
        """Up to `batch` messages for `consumer`, waiting up to `timeout` seconds for one.

        Due redeliveries come first, then new messages in stream order. Returns [] on
        timeout. Each message must be acked (or nak'd, term'd) within its ack wait.
        """
        deadline = time.monotonic() + timeout
        signal = self._signals.get(stream)
        if signal is None:
            signal = self._signals[stream] = Signal()
        while True:
            self._check()
            gen = signal.gen
            fut: asyncio.Future[Any] = self._loop.create_future()
            handle, result = await self._submit((_fetch, fut, (stream, consumer, batch)))
            if result.messages:
                return [Msg(self, handle, stream, consumer, row) for row in result.messages]
            now = time.monotonic()
            if now >= deadline:
                return []
            if signal.gen != gen:
                continue  # something arrived while the fetch was on its way back
            wait = deadline - now
            if result.wake_at is not None:
                wait = min(wait, max(result.wake_at - now, 0.0))
            waiter: asyncio.Future[None] = self._loop.create_future()
            signal.waiters.append(waiter)
            timer = self._loop.call_later(wait, _resolve_later, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                with contextlib.suppress(ValueError):
                    signal.waiters.remove(waiter)

    def ack(self, stream: str, consumer: str, seqs: Iterable[int]) -> None:
        """Ack delivered messages by sequence (fire and forget, like Msg.ack)."""
        self._enqueue((_ack_named, None, (stream, consumer, list(seqs))), stream)

    async def flush(self) -> None:
        """Wait until every operation queued before this call is committed."""
        await self._call(_noop)

    # ------------------------------------------------------------------ reading and admin

    async def get_message(self, stream: str, seq: int) -> StoredMessage | None:
        """The stored message `seq` of `stream`, or None."""
        return await self._call(Store.get_message, stream, seq)

    async def messages(
        self, stream: str, start_seq: int = 1, limit: int = 100
    ) -> list[StoredMessage]:
        """Up to `limit` stored messages from `start_seq` on."""
        return await self._call(Store.messages, stream, start_seq, limit)

    async def delete_message(self, stream: str, seq: int) -> bool:
        """Remove one stored message; False if it was not there."""
        return await self._call(Store.delete_message, stream, seq)

    async def replay(self, dead_letters: str, seqs: Iterable[int] | None = None) -> list[PubAck]:
        """Move dead letters back into the streams they came from (see Store.replay)."""
        return await self._call(Store.replay, dead_letters, None if seqs is None else list(seqs))


def _noop(store: Store) -> None:
    return None


def _ack_all(store: Store, acks: list[tuple[object, int]]) -> None:
    """Apply the acks of one loop iteration (Msg.ack), coalesced."""
    ack = store.ack_handle
    for handle, seq in acks:
        ack(handle, seq)


def _ack_named(store: Store, stream: str, consumer: str, seqs: list[int]) -> None:
    """Broker.ack: ack by stream, consumer and sequences."""
    ack = store.ack_handle
    handle = store.consumer_handle(stream, consumer)
    for seq in seqs:
        ack(handle, seq)


def _fetch(store: Store, stream: str, consumer: str, batch: int) -> tuple[object, FetchResult]:
    """Broker.fetch on the writer: the consumer's handle (for acks) and what it got."""
    handle = store.consumer_handle(stream, consumer)
    return handle, store.fetch_from(handle, batch)


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
