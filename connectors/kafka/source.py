"""The Kafka source: a consumer-group member on its own thread, committing per-partition watermarks.

Threads. kafka-python is blocking, so each connection of the source (each `connect()`)
is a `_Session` that owns one KafkaConsumer and one thread; only that thread calls the
consumer. kafka-python 3 runs its own I/O thread underneath and calls the rebalance
listener there, but only while our thread is blocked inside `poll()` or `close()`; the
session's lock makes the hand-over explicit. Records cross into the asyncio loop in
batches, one `call_soon_threadsafe` per poll; `ack` calls go the other way through a
deque that the consumer thread drains before every poll (at most 100 ms apart).

Commit watermark. For each assigned partition the session keeps the offsets it handed
over and not yet committed (`pending`, in offset order) and which of them are settled.
The watermark is the first unsettled offset (or the offset after the last record handed
over when every one is settled); an offset is committed only when every earlier record
of its partition was acknowledged, i.e. is durable in the bridge's buffer. The
watermark is committed every 200 ms when it moved, before a partition is given up in a
rebalance, and on close.

Settling. ack(None) and ack(PermanentError) (the runtime dead-lettered the message)
settle the record. Any other error, a RetryableError first of all, rewinds the
partition: the consumer seeks back to that offset, and the later records of the
partition that were handed over but not yet received by the runtime are withdrawn, so
the partition is read again in order from there. Acks of the older copies still count
(they say that the record is durable).

Rebalances. On revocation the session waits up to a second for the revoked
partitions' records to be settled, commits their watermark and forgets them; records
not settled by then are read again by the new owner (at least once; `exactly_once` into
JetStream drops them again through `Nats-Msg-Id`). Lost partitions are forgotten
without a commit. Assigned partitions start from the group's committed offset.

Backpressure. When more than the route's `max_in_flight` records are unsettled, every
assigned partition is paused; they resume once fewer than half are.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata, TopicPartition

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import AckOnce, Incoming, unreadable
from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError
from natsbridge.bridge.threads import DriverThread, Inbox, receive
from natsbridge.connectors.kafka.client import (
    DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    HAVE_C_CRC32C,
    build,
    client_options,
    describe,
)
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSource
from natsbridge.connectors.kafka.driver import read_header_names_leniently
from natsbridge.connectors.kafka.errors import TopicMissing, translate
from natsbridge.connectors.kafka.message import envelope_from_record, undecodable_record

log = logging.getLogger("natsbridge.kafka")

read_header_names_leniently()  # see there: one such record stopped the source for good

POLL_TIMEOUT_MS = 100
"""Longest wait in one poll; also the longest delay before acks are seen when idle."""
PAUSED_POLL_MS = 20
"""While paused for backpressure, the poll timeout (acks are applied between polls)."""
COMMIT_INTERVAL_S = 0.2
# Every watermark is committed again this often even when it did not move: a commit that
# was lost without its callback firing (coordinator moving, rebalance) must not leave a
# partition's committed offset stale until its next record, possibly for good.
RECOMMIT_INTERVAL_S = 5.0
"""How often a moved watermark is committed, in seconds."""
REVOKE_GRACE_S = 1.0
"""How long a revocation waits for the revoked partitions' records to be settled."""
CLOSE_TIMEOUT_S = 15.0
"""How long close() waits for the final commit and the group leave."""
CLOSE_COMMIT_TIMEOUT_MS = 5_000
MAX_POLL_RECORDS = 500


class _Partition:
    """One assigned partition's handed-over offsets; touched only under the session lock."""

    __slots__ = ("committed", "next_offset", "pending", "settled", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.pending: deque[int] = deque()  # handed over, not below the watermark, in order
        self.settled: set[int] = set()  # the settled ones among `pending`
        self.next_offset: int | None = None  # after the last record handed over
        self.committed: int | None = None  # last watermark committed (or being committed)

    def watermark(self) -> int | None:
        """The offset to commit: every record before it is settled."""
        return self.pending[0] if self.pending else self.next_offset

    def unsettled(self) -> int:
        return len(self.pending) - len(self.settled)


class _Rebalance(AsyncConsumerRebalanceListener):
    """Runs on kafka-python's I/O thread while the session thread waits in poll()/close()."""

    def __init__(self, session: _Session) -> None:
        self.session = session

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        session = self.session
        offsets = session.revoke(revoked, grace=not session.stop.is_set())
        consumer = session.consumer
        if offsets and consumer is not None:
            try:
                await consumer.commit_async(offsets)
            except Exception as exc:
                log.warning(
                    "kafka source %s: commit on revocation failed, their unsettled records "
                    "will be read again: %s",
                    session.route_name,
                    translate(exc),
                )

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.session.assign(assigned)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self.session.revoke(lost, grace=False, commit=False)


class _Session:
    """One KafkaConsumer, its thread and its partitions' state, for one `connect()`."""

    def __init__(self, source: KafkaTopicSource, options: dict[str, Any]) -> None:
        self.source = source
        self.route_name = source.route_name
        self.options = options
        self.consumer: KafkaConsumer | None = None
        self.settles: deque[tuple[_Partition, int, BaseException | None]] = deque()
        self.deferred: list[tuple[_Partition, int, BaseException | None]] = []
        self.wake = threading.Event()
        self.waiting = False  # someone waits on `wake` for settles
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.unsettled = 0
        self.paused = False
        self.inbox: Inbox[Incoming] = Inbox()
        self.driver = DriverThread(f"kafka source {source.route_name}", self._run)
        self.post = self.driver.post

    # ------------------------------------------------------------ consumer thread

    def _run(self, driver: DriverThread) -> None:
        try:
            consumer = self._open()
        except BaseException as exc:
            driver.opened_with(translate(exc))
            return
        driver.opened_with(None)
        error: BridgeError | None = None
        try:
            self._consume(consumer)
        except BaseException as exc:
            error = translate(exc)
        finally:
            self._shutdown(consumer)
            self.post(self.source._on_end, self, error)

    def _open(self) -> KafkaConsumer:
        source = self.source
        spec = source.spec
        consumer = build(KafkaConsumer, self.options, source.config)
        self.consumer = consumer
        try:
            if spec.topics:
                existing = consumer.topics()
                for topic in spec.topics:
                    if topic not in existing:
                        raise TopicMissing(
                            topic,
                            f"a Kafka source never creates topics (route {self.route_name!r}, "
                            f"bootstrap servers {describe(source.config)})",
                        )
                consumer.subscribe(topics=list(spec.topics), listener=_Rebalance(self))
            else:
                consumer.subscribe(pattern=spec.topic_pattern, listener=_Rebalance(self))
            # Refresh the metadata once subscribed: kafka-python 3.0's group leader compares
            # the partitions it assigned with the metadata it last saw, and without this
            # first refresh it rebalances a second time right after the first join.
            consumer.topics()
        except BaseException:
            with contextlib.suppress(Exception):
                consumer.close(autocommit=False, timeout_ms=CLOSE_COMMIT_TIMEOUT_MS)
            raise
        return consumer

    def _consume(self, consumer: KafkaConsumer) -> None:
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        next_recommit = time.monotonic() + RECOMMIT_INTERVAL_S
        while not self.stop.is_set():
            offsets = None
            with self.lock:
                self._apply_settles(consumer)
                now = time.monotonic()
                if now >= next_commit:
                    again = now >= next_recommit
                    offsets = self._commit_offsets(again)
                    next_commit = now + COMMIT_INTERVAL_S
                    if again:
                        next_recommit = now + RECOMMIT_INTERVAL_S
                self._flow(consumer)
                paused = self.paused
            if offsets:
                consumer.commit_async(offsets, callback=self._committed)
            # While paused the poll only serves the group (joins, heartbeats): keep it short
            # so that acks are seen soon. Never 0: kafka-python 3.0 can leave a rebalance
            # half done when poll() times out at once.
            records = consumer.poll(
                timeout_ms=PAUSED_POLL_MS if paused else POLL_TIMEOUT_MS,
                max_records=self.source.max_poll_records,
            )
            if records:
                self._hand_over(records)

    def _hand_over(self, records: Mapping[TopicPartition, Sequence[Any]]) -> None:
        connection = self.source.connection_name
        batch: list[Incoming] = []
        with self.lock:
            for tp, part_records in records.items():
                part = self.partitions.get(tp)
                if part is None:  # assigned without the listener: cannot happen, be safe
                    part = self.partitions[tp] = _Partition(tp)
                pending = part.pending
                for record in part_records:
                    offset = record.offset
                    if part.next_offset is not None and offset < part.next_offset:
                        continue  # a stale copy from before a seek
                    pending.append(offset)
                    part.next_offset = offset + 1
                    ack = AckOnce(partial(self.settle, part, offset))
                    try:
                        batch.append(Incoming(envelope_from_record(record, connection), ack))
                    except Exception as exc:  # the runtime dead-letters it, then acks
                        envelope = undecodable_record(record, connection)
                        batch.append(unreadable(envelope, ack, exc, "kafka"))
            self.unsettled += len(batch)
        self.inbox.post_all(batch)

    def settle(self, part: _Partition, offset: int, error: BaseException | None) -> None:
        """Record how the runtime settled a record (any thread); the session thread applies it."""
        self.settles.append((part, offset, error))
        if self.waiting:
            self.wake.set()

    def _apply_settles(self, consumer: KafkaConsumer | None) -> None:
        """Under the lock: apply queued acks; rewind (seek) for nacks when `consumer` is given."""
        if consumer is not None and self.deferred:
            self.settles.extendleft(reversed(self.deferred))
            self.deferred = []
        settles = self.settles
        partitions = self.partitions
        while settles:
            part, offset, error = settles.popleft()
            if partitions.get(part.tp) is not part:
                continue  # revoked since: the next owner reads it again
            pending = part.pending
            if not pending or offset < pending[0] or offset > pending[-1] or offset in part.settled:
                continue  # settled already, or withdrawn by a rewind (it comes again)
            if error is None or isinstance(error, PermanentError):
                part.settled.add(offset)
                self.unsettled -= 1
                settled = part.settled
                while pending and pending[0] in settled:
                    settled.discard(pending.popleft())
            elif consumer is None:
                self.deferred.append((part, offset, error))  # seek from the consumer thread
            else:
                self._rewind(consumer, part, offset)

    def _rewind(self, consumer: KafkaConsumer, part: _Partition, offset: int) -> None:
        """Read `part` again from `offset`: withdraw what was handed over from there on."""
        pending = part.pending
        while pending and pending[-1] >= offset:
            dropped = pending.pop()
            if dropped in part.settled:
                part.settled.discard(dropped)
            else:
                self.unsettled -= 1
        part.next_offset = offset
        consumer.seek(part.tp, offset)
        self.post(self.withdraw, part, offset)
        log.debug("kafka source %s: rewinding %s to offset %d", self.route_name, part.tp, offset)

    def _commit_offsets(self, again: bool = False) -> dict[TopicPartition, OffsetAndMetadata]:
        """Under the lock: the watermarks that moved since last committed (`again`: all)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for part in self.partitions.values():
            mark = part.watermark()
            if mark is not None and (again or mark != part.committed):
                offsets[part.tp] = OffsetAndMetadata(mark, "", -1)
                part.committed = mark
        return offsets

    def _committed(self, offsets: Mapping[TopicPartition, Any], response: Any) -> None:
        """Result of a periodic commit (on the consumer thread): on failure, commit again."""
        if not isinstance(response, BaseException):
            return
        log.debug("kafka source %s: commit failed, will retry: %s", self.route_name, response)
        with self.lock:
            for tp, meta in offsets.items():
                part = self.partitions.get(tp)
                if part is not None and part.committed == meta.offset:
                    part.committed = None

    def _flow(self, consumer: KafkaConsumer) -> None:
        """Under the lock: pause above max_in_flight unsettled records, resume below half."""
        limit = self.source.max_in_flight
        if not self.paused and self.unsettled > limit:
            self.paused = True
        elif self.paused and self.unsettled <= limit // 2:
            self.paused = False
            paused = consumer.paused()
            if paused:
                consumer.resume(*paused)
        if self.paused:
            todo = consumer.assignment() - consumer.paused()
            if todo:
                consumer.pause(*todo)

    def _shutdown(self, consumer: KafkaConsumer) -> None:
        """Commit what the acks given so far allow, then leave the group and close."""
        with self.lock:
            self._apply_settles(None)
            offsets = self._commit_offsets()
        try:
            if offsets:
                consumer.commit(offsets, timeout_ms=CLOSE_COMMIT_TIMEOUT_MS)
        except Exception as exc:
            log.warning(
                "kafka source %s: final commit failed, records after the last committed "
                "offset will be read again: %s",
                self.route_name,
                translate(exc),
            )
        try:
            consumer.close(autocommit=False, timeout_ms=CLOSE_COMMIT_TIMEOUT_MS)
        except Exception as exc:
            log.debug("kafka source %s: close: %s", self.route_name, exc)

    # ------------------------------------------------------------ asyncio loop

    def withdraw(self, part: _Partition, from_offset: int) -> None:
        """Drop not-yet-received records of `part` from `from_offset` on (rewound or revoked)."""
        ready = self.inbox.items
        if not ready:
            return
        topic, partition = part.tp.topic, part.tp.partition
        kept = [
            incoming
            for incoming in ready
            if not (
                (origin := incoming.envelope.origin) is not None
                and origin.partition == partition
                and origin.topic == topic
                and origin.offset is not None
                and origin.offset >= from_offset
            )
        ]
        if len(kept) != len(ready):
            ready.clear()
            ready.extend(kept)

    # ------------------------------------------------------------ kafka-python's I/O thread

    def assign(self, assigned: set[TopicPartition]) -> None:
        """Start tracking newly assigned partitions (they start at the committed offset)."""
        with self.lock:
            for tp in assigned:
                if tp not in self.partitions:
                    self.partitions[tp] = _Partition(tp)
        log.info(
            "kafka source %s: assigned %s",
            self.route_name,
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing",
        )

    def revoke(
        self, revoked: set[TopicPartition], grace: bool, commit: bool = True
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Forget `revoked`; with `commit`, their watermarks to commit first."""
        deadline = time.monotonic() + (REVOKE_GRACE_S if grace else 0.0)
        while True:
            with self.lock:
                self._apply_settles(None)
                waiting = sum(
                    self.partitions[tp].unsettled() for tp in revoked if tp in self.partitions
                )
            if not waiting or time.monotonic() >= deadline:
                break
            self.waiting = True
            self.wake.wait(0.02)
            self.waiting = False
            self.wake.clear()
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        with self.lock:
            for tp in revoked:
                part = self.partitions.pop(tp, None)
                if part is None:
                    continue
                self.unsettled -= part.unsettled()
                mark = part.watermark()
                if commit and mark is not None and mark != part.committed:
                    offsets[tp] = OffsetAndMetadata(mark, "", -1)
                self.post(self.withdraw, part, -1)
            self.deferred = [d for d in self.deferred if d[0].tp not in revoked]
        if revoked:
            log.info(
                "kafka source %s: %s %s (%d unsettled records will be read again)",
                self.route_name,
                "revoked" if commit else "lost",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked)),
                waiting,
            )
        return offsets


class KafkaTopicSource:
    """Source reading Kafka topics through a consumer group; see the module docstring."""

    def __init__(
        self,
        route: Route,
        connection: KafkaConnection,
        connection_name: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        spec = route.source
        assert isinstance(spec, KafkaSource)
        self.spec = spec
        self.config = connection
        self.connection_name = connection_name
        self.route_name = route.name
        self.group_id = spec.group_id or f"natsbridge-{route.name}"
        self.max_in_flight = route.spec.max_in_flight
        self.max_poll_records = min(MAX_POLL_RECORDS, self.max_in_flight)
        self.overrides = dict(overrides or {})
        """Extra KafkaConsumer options (tests use short session and heartbeat times)."""
        self._session: _Session | None = None
        self._inbox: Inbox[Incoming] | None = None  # the session's

    def consumer_options(self) -> dict[str, Any]:
        """The KafkaConsumer options of this source."""
        return client_options(
            self.config,
            self.overrides,
            group_id=self.group_id,
            auto_offset_reset=self.spec.auto_offset_reset,
            enable_auto_commit=False,
            # kafka-python checksums in pure Python without the crc32c extension, at a
            # few thousand records per second: then skip it, as librdkafka does by default.
            check_crcs=HAVE_C_CRC32C,
            max_poll_records=self.max_poll_records,
            allow_auto_create_topics=False,
        )

    # ------------------------------------------------------------ Source

    async def connect(self) -> None:
        """Start the consumer thread, check the topics exist, join the group."""
        await self.close()
        session = _Session(self, self.consumer_options())
        self._session, self._inbox = session, session.inbox
        try:
            await session.driver.start(
                3 * DEFAULT_BOOTSTRAP_TIMEOUT_MS / 1000,
                f"kafka: {describe(self.config)}: source",
                session.stop.set,
            )
        except BaseException:
            self._session = self._inbox = None
            raise
        what = self.spec.topics or f"pattern {self.spec.topic_pattern!r}"
        log.info("kafka source %s: consuming %s as group %r", self.route_name, what, self.group_id)

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        """Up to `max_messages` records, waiting at most `timeout` s for the first."""
        return await receive(self._inbox, max_messages, timeout, "kafka: source")

    async def close(self) -> None:
        """Apply the acks given so far, commit, leave the group. Idempotent."""
        session = self._session
        if session is None:
            return
        self._session = None
        session.inbox.end(ConnectionLost("kafka: source closed"), discard=True)
        session.stop.set()
        session.wake.set()
        if not await session.driver.join(CLOSE_TIMEOUT_S):
            log.warning("kafka source %s: consumer did not close in time", self.route_name)

    # ------------------------------------------------------------ asyncio side

    def _on_end(self, session: _Session, error: BridgeError | None) -> None:
        error = error or ConnectionLost("kafka: consumer stopped")
        session.inbox.end(error, discard=True)  # their acks would reach a closed consumer
        if session is not self._session:
            return
        self._session = None
        log.warning("kafka source %s: %s", self.route_name, error)
