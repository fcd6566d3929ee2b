"""The Kafka sink: an idempotent KafkaProducer (acks=all) fed by a thread of its own.

`send_batch()` puts (future, envelope) on a queue per message and awaits the futures.
The sink thread takes everything queued, in call order, and hands each record to
`KafkaProducer.send()` (which can block: on metadata for a new topic, or when its buffer
is full, so it never runs on the event loop). kafka-python batches the records per
partition (linger 5 ms) and its sender thread resolves each record's future when the
broker acknowledged it with acks=all; those completions cross to the event loop in
batches, one `call_soon_threadsafe` per burst. Sends are never flushed one by one:
many are in flight at once.

Idempotence: `enable_idempotence=True` with `max_in_flight_requests_per_connection=5`
(the most idempotence allows): the producer's own retries (a broker restart, a leader
change) neither duplicate nor reorder records of a partition. A send that fails after
the delivery timeout (120 s) raises BridgeTimeout and the runtime sends it again; that
application-level resend is a new record to Kafka, so it can duplicate one that was in
fact written (at least once).

Topics: the topic is the rendered `to.topic` (envelope.subject). A topic is checked
with the admin client before the producer first writes to it (kafka-python 3.0 asks for
metadata with auto-creation on, whatever `allow_auto_create_topics` says, so the producer
alone would create it on a broker with auto.create.topics.enable). A missing topic is
created with `to.create_topic` (partitions, replication factor), else it is a TopicMissing
error naming it: at connect() for a literal topic (the route cannot work), at send_batch() for a
templated one (that message is dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kafka.errors as ke
from kafka import KafkaAdminClient, KafkaProducer

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    ConnectionLost,
    MessageRejected,
    PermanentError,
)
from natsbridge.bridge.threads import Completions, Confirms, DriverThread, failed
from natsbridge.connectors.kafka.client import (
    DEFAULT_BOOTSTRAP_TIMEOUT_MS,
    admin,
    build,
    check_compression,
    client_options,
    create_topic,
    describe,
    max_message_bytes,
    partition_count,
)
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSink
from natsbridge.connectors.kafka.errors import RecordTooLarge, TopicMissing, translate
from natsbridge.connectors.kafka.message import record_from_envelope
from natsbridge.mappings.kafka import validate_topic

log = logging.getLogger("natsbridge.kafka")

LINGER_MS = 5
"""How long the producer waits to fill a batch, in milliseconds."""
BATCH_SIZE = 64 * 1024
"""Bytes per partition batch (kafka-python's default of 16 KiB is 16 records of 1 KiB)."""
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
"""The producer's limit on one record (and request), unless the route's max_payload is larger."""
MAX_IN_FLIGHT_REQUESTS = 5
"""Per connection; idempotence keeps order and avoids duplicates up to 5."""
CLOSE_TIMEOUT_S = 10.0
"""How long close() waits for outstanding acknowledgements."""
MISSING_TOPIC_RECHECK_S = 10.0
"""How long a templated topic found missing is remembered as missing."""

RECORD_OVERHEAD = 61 + 32
"""Bytes a record batch of one record adds to key, value and headers (an upper bound)."""

_STOP = object()


def record_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of the size of a batch holding just this record, as the broker counts it."""
    size = RECORD_OVERHEAD + len(value) + len(key or b"")
    for name, header_value in headers:
        size += len(name.encode()) + len(header_value) + 10
    return size


class KafkaTopicSink:
    """Sink producing to Kafka topics; see the module docstring."""

    def __init__(
        self,
        route: Route,
        connection: KafkaConnection,
        connection_name: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        spec = route.sink
        assert isinstance(spec, KafkaSink)
        self.spec = spec
        self.config = connection
        self.route_name = route.name
        template = route.templates.get("topic")
        self.literal_topic = spec.topic if template is None or not template.placeholders else None
        max_payload = route.spec.max_payload or 0
        self.max_request_size = max(DEFAULT_MAX_REQUEST_SIZE, int(max_payload) + 64 * 1024)
        self.overrides = dict(overrides or {})
        """Extra KafkaProducer options (tests and benchmarks)."""
        self._worker: _Producer | None = None
        self._error: BridgeError = ConnectionLost("kafka: sink not connected")
        self._confirms = Confirms()

    def producer_options(self) -> dict[str, Any]:
        """The KafkaProducer options of this sink."""
        return client_options(
            self.config,
            self.overrides,
            acks="all",
            enable_idempotence=True,
            max_in_flight_requests_per_connection=MAX_IN_FLIGHT_REQUESTS,
            linger_ms=LINGER_MS,
            batch_size=BATCH_SIZE,
            compression_type=check_compression(self.spec.compression),
            max_request_size=self.max_request_size,
            allow_auto_create_topics=False,
        )

    # ------------------------------------------------------------ Sink

    async def connect(self) -> None:
        """Start the producer (and check or create a literal topic)."""
        await self.close()
        worker = _Producer(self, self.producer_options())
        await worker.driver.start(
            3 * DEFAULT_BOOTSTRAP_TIMEOUT_MS / 1000 + 15,
            f"kafka: {describe(self.config)}: sink",
            worker.stop,
        )
        self._worker = worker
        log.info(
            "kafka sink %s: producing to %s (acks=all, idempotent)",
            self.route_name,
            repr(self.literal_topic) if self.literal_topic else f"topic {self.spec.topic!r}",
        )

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Produce each envelope to the topic it names; settled once the broker acknowledged it."""
        worker = self._worker
        if worker is None:
            error = self._error
            return await self._confirms.wait([failed(type(error)(*error.args)) for _ in envelopes])
        waits: list[asyncio.Future[None]] = []
        for envelope in envelopes:
            future: asyncio.Future[None] = worker.driver.loop.create_future()
            waits.append(future)
            worker.outbox.put((future, envelope))
        worker.waiting.update(waits)
        try:
            return await self._confirms.wait(waits)
        finally:
            worker.waiting.difference_update(waits)

    async def close(self) -> None:
        """Wait (bounded) for outstanding acknowledgements, then close the producer. Idempotent."""
        worker = self._worker
        if worker is None:
            return
        await self._confirms.drain(CLOSE_TIMEOUT_S, f"kafka sink {self.route_name}")
        self._worker = None
        self._error = ConnectionLost("kafka: sink closed")
        worker.stop()
        await worker.driver.join(CLOSE_TIMEOUT_S)
        worker.fail_all(self._error)


class _Producer:
    """The KafkaProducer of one `connect()`, and the thread that feeds it."""

    def __init__(self, sink: KafkaTopicSink, options: dict[str, Any]) -> None:
        self.sink = sink
        self.options = options
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.driver = DriverThread(f"kafka sink {sink.route_name}", self._run)
        self.producer: KafkaProducer | None = None
        self.admin: KafkaAdminClient | None = None
        self.known: set[str] = set()  # topics that exist
        self.limits: dict[str, int | None] = {}  # topic -> its max.message.bytes
        self.broken: BridgeError | None = None  # set when the producer must be replaced
        self.missing: dict[str, float] = {}  # topic -> when it was found missing
        # Settled by kafka-python's sender thread, a burst per loop wake-up.
        self.completions = Completions()
        self._complete = self.completions.settle
        self.waiting: set[asyncio.Future[None]] = set()  # loop side: sends not yet resolved

    def stop(self) -> None:
        self.outbox.put(_STOP)

    # ------------------------------------------------------------ sink thread

    def _run(self, driver: DriverThread) -> None:
        try:
            self._open()
        except BaseException as exc:
            self._close_clients()
            driver.opened_with(translate(exc))
            return
        driver.opened_with(None)
        try:
            self._produce()
        finally:
            self._close_clients()

    def _open(self) -> None:
        sink = self.sink
        topic = sink.literal_topic
        if topic is not None:
            self._ensure_topic(topic)
            partition = sink.spec.partition
            if partition is not None:
                count = self._partitions(topic)
                if count is not None and partition >= count:
                    raise PermanentError(
                        f"kafka: to.partition is {partition} but topic {topic!r} has "
                        f"{count} partitions (0-{count - 1})"
                    )
            limit = self.limits.get(topic)
            if limit is not None and limit < self.options["batch_size"]:
                # A batch larger than the topic accepts would be refused whole.
                self.options["batch_size"] = max(1024, limit - RECORD_OVERHEAD)
        self.producer = build(KafkaProducer, self.options, sink.config)

    def _admin(self) -> KafkaAdminClient:
        if self.admin is None:
            self.admin = admin(self.sink.config)
        return self.admin

    def _partitions(self, topic: str) -> int | None:
        return partition_count(self._admin(), topic)

    def _ensure_topic(self, topic: str) -> None:
        """Raise TopicMissing unless `topic` exists or was created now (blocking)."""
        if topic in self.known:
            return
        missing_since = self.missing.get(topic)
        if missing_since is not None and time.monotonic() - missing_since < MISSING_TOPIC_RECHECK_S:
            raise self._missing(topic)
        creation = self.sink.spec.create_topic
        if self._partitions(topic) is None:
            if creation is None:
                self.missing[topic] = time.monotonic()
                raise self._missing(topic)
            create_topic(self._admin(), topic, creation)
        self.missing.pop(topic, None)
        self.limits[topic] = max_message_bytes(self._admin(), topic)
        self.known.add(topic)

    def _missing(self, topic: str) -> TopicMissing:
        return TopicMissing(
            topic,
            f"route {self.sink.route_name!r} does not create it (set to.create_topic with "
            f"partitions and replication_factor, or create it) — bootstrap servers "
            f"{describe(self.sink.config)}",
        )

    def _produce(self) -> None:
        outbox = self.outbox
        producer = self.producer
        assert producer is not None
        partition = self.sink.spec.partition
        limit = self.sink.max_request_size
        while True:
            item = outbox.get()
            while True:
                if item is _STOP:
                    return
                future, envelope = item
                try:
                    if self.broken is not None:
                        raise self.broken
                    record = record_from_envelope(envelope)
                    if record.topic not in self.known:
                        validate_topic(record.topic)
                        self._ensure_topic(record.topic)
                    size = record_size(record.key, record.value, record.headers)
                    topic_limit = self.limits.get(record.topic) or limit
                    if size > min(topic_limit, limit):
                        raise RecordTooLarge(
                            size,
                            min(topic_limit, limit),
                            f"over the {'topic' if topic_limit < limit else 'producer'} limit "
                            f"of {min(topic_limit, limit)} bytes (topic {record.topic!r})",
                        )
                    sent = producer.send(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=partition,
                        timestamp_ms=record.timestamp_ms,
                    )
                except AssertionError as exc:  # kafka-python: a partition the topic lacks
                    self._complete(future, MessageRejected(f"kafka: {exc or 'bad partition'}"))
                except BridgeError as exc:  # some are ValueErrors (HeaderError)
                    self._complete(future, exc)
                except (ValueError, TypeError, OverflowError, struct.error) as exc:
                    # A value kafka-python cannot write: this message's fault, not the
                    # connection's (translate() would make it a reconnect, forever).
                    self._complete(
                        future, MessageRejected(f"kafka: cannot write the record: {exc!r}")
                    )
                except BaseException as exc:
                    self._complete(future, translate(exc, size=len(envelope.payload), limit=limit))
                else:
                    sent.add_callback(self._acked, future)
                    sent.add_errback(self._failed, future, size)
                try:
                    item = outbox.get_nowait()
                except queue.Empty:
                    break

    def _close_clients(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=CLOSE_TIMEOUT_S)
            except Exception as exc:
                log.debug("kafka sink %s: close: %s", self.sink.route_name, exc)
        if self.admin is not None:
            with contextlib.suppress(Exception):
                self.admin.close()

    # ------------------------------------------------------------ kafka-python's sender thread

    def _acked(self, future: asyncio.Future[None], _metadata: Any) -> None:
        self._complete(future, None)

    def _failed(self, future: asyncio.Future[None], size: int, exc: BaseException) -> None:
        if isinstance(exc, ke.MessageSizeTooLargeError | ke.RecordListTooLargeError):
            # The broker refused a batch. kafka-python 3.0's idempotent producer then fails
            # every later record of that partition the same way, so this producer is done:
            # the runtime reconnects (a new producer) and sends the others again. The
            # size check before sending keeps single records from getting here.
            if self.broken is None:
                self.broken = ConnectionLost(
                    "kafka: the broker refused a batch as too large; the producer is replaced"
                )
            self._complete(future, self.broken)
            return
        if isinstance(exc, ke.InvalidTimestampError | ke.InvalidRecordError):
            # The broker refused a record (a timestamp out of the topic's range that
            # `record_timestamp_ms` let through): the same poisoned producer as above.
            # The first refusal is that record's (dead-lettered); later ones on this
            # producer are the poisoning ("one or more records have been rejected") and
            # are sent again on a new producer.
            if self.broken is None:
                self.broken = ConnectionLost(
                    f"kafka: the broker refused a record ({exc}); the producer is replaced"
                )
                self._complete(future, translate(exc))
            else:
                self._complete(future, self.broken)
            return
        self._complete(future, translate(exc, size=size, limit=self.sink.max_request_size))

    def fail_all(self, error: BridgeError) -> None:
        """After the thread ended: fail sends still queued or unacknowledged."""
        self.completions.flush()
        with contextlib.suppress(queue.Empty):
            while True:
                self.outbox.get_nowait()
        for future in list(self.waiting):
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()
