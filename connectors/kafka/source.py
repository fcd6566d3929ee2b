"""The Kafka source: a consumer-group member on its own thread, committing per-partition watermarks.

Threads. confluent-kafka's Consumer (librdkafka) blocks in `consume()`, so each
connection of the source (each `connect()`) is a `_Session` that owns one Consumer and
one thread; only that thread calls the consumer, and librdkafka runs the rebalance and
commit callbacks on it, inside `consume()` or `close()`. So the partitions' state has
one owner and no lock. Records cross into the asyncio loop in batches, one
`call_soon_threadsafe` per `consume()`; `ack` calls go the other way through a deque that
the consumer thread drains before every `consume()` (at most 100 ms apart).

Group. Cooperative-sticky rebalancing (``partition.assignment.strategy``): a member that
joins or leaves moves only the partitions that must move; the others keep flowing.

Commit watermark. For each assigned partition the session keeps the offsets it handed
over and not yet committed (`pending`, in offset order) and which of them are settled.
The watermark is the first unsettled offset (or the offset after the last record handed
over when every one is settled); an offset is committed only when every earlier record
of its partition was acknowledged, i.e. is durable in the bridge's buffer. The
watermark is committed every 200 ms when it moved (and every 5 s anyway), before a
partition is given up in a rebalance, and on close. Auto-commit and auto offset store
are off.

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

Backpressure. While more than the route's `max_in_flight` records are unsettled the
session stops calling `consume()` and waits for acks (librdkafka's bounded prefetch
queue fills meanwhile); after a second of that every assigned partition is paused
(`Consumer.pause`, which drops the prefetched records), until fewer than half are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import AckOnce, Incoming, unreadable
from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError
from natsbridge.bridge.threads import DriverThread, Inbox, receive
from natsbridge.connectors.kafka.client import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    bootstrap,
    reach,
    settings,
)
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSource
from natsbridge.connectors.kafka.errors import TopicMissing, describe, translate
from natsbridge.connectors.kafka.message import envelope_from_record, undecodable_record

log = logging.getLogger("natsbridge.kafka")

POLL_TIMEOUT_S = 0.1
"""Longest wait in one consume(); also the longest delay before acks are seen when idle."""
PAUSED_POLL_S = 0.02
"""While held or paused for backpressure, the longest wait before acks are applied."""
PAUSE_AFTER_S = 1.0
"""How long over max_in_flight unsettled records before the partitions are paused."""
COMMIT_INTERVAL_S = 0.2
"""How often a moved watermark is committed, in seconds."""
# Every watermark is committed again this often even when it did not move: a commit that
# was lost without its callback firing (coordinator moving, rebalance) must not leave a
# partition's committed offset stale until its next record, possibly for good.
RECOMMIT_INTERVAL_S = 5.0
REVOKE_GRACE_S = 1.0
"""How long a revocation waits for the revoked partitions' records to be settled."""
CLOSE_TIMEOUT_S = 15.0
"""How long close() waits for the final commit and the group leave."""
MAX_POLL_RECORDS = 500

Key = tuple[str, int]
"""A partition: (topic, partition)."""


class _Partition:
    """One assigned partition's handed-over offsets; touched only by the session thread."""

    __slots__ = ("committed", "key", "next_offset", "pending", "settled")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.pending: deque[int] = deque()  # handed over, not below the watermark, in order
        self.settled: set[int] = set()  # the settled ones among `pending`
        self.next_offset: int | None = None  # after the last record handed over
        self.committed: int | None = None  # last watermark committed (or being committed)

    def watermark(self) -> int | None:
        """The offset to commit: every record before it is settled."""
        return self.pending[0] if self.pending else self.next_offset

    def unsettled(self) -> int:
        return len(self.pending) - len(self.settled)

    def position(self, offset: int) -> TopicPartition:
        return TopicPartition(self.key[0], self.key[1], offset)


def _keys(partitions: Sequence[TopicPartition]) -> list[Key]:
    return [(tp.topic, tp.partition) for tp in partitions]


def _shown(keys: Sequence[Key]) -> str:
    return ", ".join(f"{topic}[{partition}]" for topic, partition in sorted(keys)) or "nothing"


class _Session:
    """One Consumer, its thread and its partitions' state, for one `connect()`."""

    def __init__(self, source: KafkaTopicSource, options: dict[str, Any]) -> None:
        self.source = source
        self.route_name = source.route_name
        self.errors = ClientErrors()
        self.options = {**options, "error_cb": self.errors, "on_commit": self._committed}
        self.consumer: Consumer | None = None
        self.settles: deque[tuple[_Partition, int, BaseException | None]] = deque()
        self.wake = threading.Event()
        self.waiting = False  # the session thread waits on `wake` for settles
        self.stop = threading.Event()
        self.partitions: dict[Key, _Partition] = {}
        self.unsettled = 0
        self.over_since: float | None = None  # since when more than max_in_flight are unsettled
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

    def _open(self) -> Consumer:
        source = self.source
        spec = source.spec
        try:
            consumer = Consumer(self.options)
        except KafkaException as exc:
            raise PermanentError(f"kafka: configuration: {translate(exc)}") from None
        self.consumer = consumer
        try:
            metadata = reach(consumer, self.errors, source.config)
            topics = list(spec.topics or ())
            for topic in topics:
                described = metadata.topics.get(topic)
                if described is None or described.error is not None:
                    raise TopicMissing(
                        topic,
                        f"a Kafka source never creates topics (route {self.route_name!r}, "
                        f"bootstrap servers {bootstrap(source.config)})",
                    )
            pattern = spec.topic_pattern or ""
            consumer.subscribe(
                topics or [pattern if pattern.startswith("^") else f"^{pattern}"],
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )
        except BaseException:
            consumer.close()
            raise
        return consumer

    def _consume(self, consumer: Consumer) -> None:
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        next_recommit = time.monotonic() + RECOMMIT_INTERVAL_S
        batch = self.source.max_poll_records
        while not self.stop.is_set():
            self._apply_settles(consumer)
            now = time.monotonic()
            if now >= next_commit:
                again = now >= next_recommit
                offsets = self._commit_offsets(again)
                if offsets:
                    consumer.commit(offsets=offsets, asynchronous=True)
                next_commit = now + COMMIT_INTERVAL_S
                if again:
                    next_recommit = now + RECOMMIT_INTERVAL_S
            if self._flow(consumer, now):
                self._wait_for_settles(PAUSED_POLL_S)  # librdkafka keeps fetching ahead
                continue
            records = consumer.consume(batch, PAUSED_POLL_S if self.paused else POLL_TIMEOUT_S)
            if records:
                self._hand_over(records)

    def _wait_for_settles(self, timeout: float) -> None:
        self.waiting = True
        if not self.settles:
            self.wake.wait(timeout)
        self.waiting = False
        self.wake.clear()

    def _hand_over(self, records: list[Any]) -> None:
        connection = self.source.connection_name
        batch: list[Incoming] = []
        partitions = self.partitions
        for record in records:
            error = record.error()
            if error is not None:
                self._consume_error(error)
                continue
            key = (record.topic(), record.partition())
            part = partitions.get(key)
            if part is None:  # assigned without the callback: cannot happen, be safe
                part = partitions[key] = _Partition(key)
            offset = record.offset()
            if part.next_offset is not None and offset < part.next_offset:
                continue  # a stale copy from before a seek
            part.pending.append(offset)
            part.next_offset = offset + 1
            ack = AckOnce(partial(self.settle, part, offset))
            try:
                batch.append(Incoming(envelope_from_record(record, connection), ack))
            except Exception as exc:  # the runtime dead-letters it, then acks
                envelope = undecodable_record(record, connection)
                batch.append(unreadable(envelope, ack, exc, "kafka"))
        self.unsettled += len(batch)
        if batch:
            self.inbox.post_all(batch)

    def _consume_error(self, error: KafkaError) -> None:
        """An error event from consume(): fatal ones end the session, the rest are logged."""
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("kafka source %s: %s", self.route_name, describe(error))

    def settle(self, part: _Partition, offset: int, error: BaseException | None) -> None:
        """Record how the runtime settled a record (any thread); the session thread applies it."""
        self.settles.append((part, offset, error))
        if self.waiting:
            self.wake.set()

    def _apply_settles(self, consumer: Consumer | None) -> None:
        """Apply queued acks; rewind (seek) for nacks unless closing (`consumer` None)."""
        settles = self.settles
        partitions = self.partitions
        while settles:
            part, offset, error = settles.popleft()
            if partitions.get(part.key) is not part:
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
            elif consumer is not None:
                self._rewind(consumer, part, offset)

    def _rewind(self, consumer: Consumer, part: _Partition, offset: int) -> None:
        """Read `part` again from `offset`: withdraw what was handed over from there on."""
        pending = part.pending
        while pending and pending[-1] >= offset:
            dropped = pending.pop()
            if dropped in part.settled:
                part.settled.discard(dropped)
            else:
                self.unsettled -= 1
        part.next_offset = offset
        try:
            consumer.seek(part.position(offset))
        except KafkaException as exc:  # not being fetched: start over from the commits
            raise ConnectionLost(
                f"kafka: cannot rewind {_shown([part.key])} to offset {offset}: {translate(exc)}"
            ) from None
        self.post(self.withdraw, part.key, offset)
        log.debug(
            "kafka source %s: rewinding %s to %d", self.route_name, _shown([part.key]), offset
        )

    def _commit_offsets(self, again: bool = False) -> list[TopicPartition]:
        """The watermarks that moved since last committed (`again`: all)."""
        offsets: list[TopicPartition] = []
        for part in self.partitions.values():
            mark = part.watermark()
            if mark is not None and (again or mark != part.committed):
                offsets.append(part.position(mark))
                part.committed = mark
        return offsets

    def _committed(self, error: KafkaError | None, offsets: list[TopicPartition]) -> None:
        """Result of a commit (on the session thread): on failure, commit again."""
        failed = [tp for tp in offsets if error is not None or tp.error is not None]
        if not failed:
            return
        log.debug(
            "kafka source %s: commit failed, will retry: %s",
            self.route_name,
            describe(error) if error is not None else describe(failed[0].error),
        )
        for tp in failed:
            part = self.partitions.get((tp.topic, tp.partition))
            if part is not None and part.committed == tp.offset:
                part.committed = None

    def _flow(self, consumer: Consumer, now: float) -> bool:
        """True to hold off consume(): over max_in_flight unsettled records.

        A short hold only waits for acks (librdkafka's prefetch queue keeps filling, up to
        its own limits): pausing costs a refetch of what was prefetched, which made every
        buffer commit a round trip. Held for `PAUSE_AFTER_S`, the partitions are paused
        (consume() then only serves the group) until fewer than half are unsettled.
        """
        limit = self.source.max_in_flight
        if self.unsettled <= limit:
            self.over_since = None
            if self.paused and self.unsettled <= limit // 2:
                self.paused = False
                consumer.resume(consumer.assignment())
            return False
        if self.over_since is None:
            self.over_since = now
        if not self.paused and now - self.over_since >= PAUSE_AFTER_S:
            self.paused = True
            consumer.pause(consumer.assignment())
        return not self.paused

    def _shutdown(self, consumer: Consumer) -> None:
        """Commit what the acks given so far allow, then leave the group and close."""
        self._apply_settles(None)
        offsets = self._commit_offsets()
        try:
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:
            log.warning(
                "kafka source %s: final commit failed, records after the last committed "
                "offset will be read again: %s",
                self.route_name,
                translate(exc),
            )
        try:
            consumer.close()
        except Exception as exc:
            log.debug("kafka source %s: close: %s", self.route_name, exc)

    # ------------------------------------------------------------ rebalance callbacks

    def _assigned(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        """Start tracking newly assigned partitions (they start at the committed offset)."""
        for key in _keys(assigned):
            if key not in self.partitions:
                self.partitions[key] = _Partition(key)
        if self.paused and assigned:
            consumer.pause(assigned)
        log.info("kafka source %s: assigned %s", self.route_name, _shown(_keys(assigned)))

    def _revoked(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        """Wait (bounded) for the revoked partitions' acks, commit their watermark, forget them."""
        offsets = self._forget(_keys(revoked), grace=not self.stop.is_set(), commit=True)
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning(
                    "kafka source %s: commit on revocation failed, their unsettled records "
                    "will be read again: %s",
                    self.route_name,
                    translate(exc),
                )

    def _lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        self._forget(_keys(lost), grace=False, commit=False)

    def _forget(self, keys: list[Key], grace: bool, commit: bool) -> list[TopicPartition]:
        """Forget the partitions `keys`; with `commit`, their watermarks to commit first."""
        deadline = time.monotonic() + (REVOKE_GRACE_S if grace else 0.0)
        while True:
            self._apply_settles(None)
            waiting = sum(self.partitions[k].unsettled() for k in keys if k in self.partitions)
            if not waiting or time.monotonic() >= deadline:
                break
            self._wait_for_settles(0.02)
        offsets: list[TopicPartition] = []
        for key in keys:
            part = self.partitions.pop(key, None)
            if part is None:
                continue
            self.unsettled -= part.unsettled()
            mark = part.watermark()
            if commit and mark is not None and mark != part.committed:
                offsets.append(part.position(mark))
            self.post(self.withdraw, key, -1)
        if keys:
            log.info(
                "kafka source %s: %s %s (%d unsettled records will be read again)",
                self.route_name,
                "revoked" if commit else "lost",
                _shown(keys),
                waiting,
            )
        return offsets

    # ------------------------------------------------------------ asyncio loop

    def withdraw(self, key: Key, from_offset: int) -> None:
        """Drop not-yet-received records of partition `key` from `from_offset` on."""
        ready = self.inbox.items
        if not ready:
            return
        topic, partition = key
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
        """Extra librdkafka properties (tests use short session and heartbeat times)."""
        self._session: _Session | None = None
        self._inbox: Inbox[Incoming] | None = None  # the session's

    def consumer_options(self) -> dict[str, Any]:
        """The Consumer's librdkafka settings (error_cb and on_commit are the session's)."""
        options = settings(
            self.config,
            ClientErrors(),
            **{
                "group.id": self.group_id,
                "auto.offset.reset": self.spec.auto_offset_reset,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "partition.assignment.strategy": "cooperative-sticky",
                "allow.auto.create.topics": False,
            },
        )
        options.update(self.overrides)
        return options

    # ------------------------------------------------------------ Source

    async def connect(self) -> None:
        """Start the consumer thread, check the topics exist, join the group."""
        await self.close()
        session = _Session(self, self.consumer_options())
        self._session, self._inbox = session, session.inbox
        try:
            await session.driver.start(
                3 * CONNECT_TIMEOUT_S,
                f"kafka: {bootstrap(self.config)}: source",
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
