"""The Kafka sink: an idempotent confluent-kafka Producer (acks=all), or a transactional one.

Threads. `send_batch()` puts one batch (its envelopes and a future each) on a queue and
awaits the futures. The sink thread takes the batches in call order and hands each
record to `Producer.produce()` (which can block on metadata for a new topic, so it never
runs on the event loop); librdkafka batches the records per partition (linger 5 ms)
and sends them. Delivery reports are served by a second thread that calls
`Producer.poll()`; the outcomes cross to the event loop in bursts (bridge.threads
`Completions`, one `call_soon_threadsafe` per burst). Many records are in flight at once.

At least once (the default): ``acks=all`` and ``enable.idempotence``: librdkafka's own
retries (a broker restart, a leader change) neither duplicate nor reorder the records of
a partition. A record counts as sent when the broker acknowledged it. A send that fails
after the delivery timeout (120 s) is a BridgeTimeout and the runtime sends it again; that
resend is a new record to Kafka, so it can duplicate one that was in fact written.

Exactly once (`delivery: exactly_once`): the producer is transactional, each
`send_batch()` one transaction committed before its futures resolve, with a marker that
lets a restarted bridge skip what was committed and not yet settled
(connectors/kafka/transactions.py). Consumers with ``isolation.level=read_committed``
see each record once.

Topics: the topic is the rendered `to.topic` (envelope.subject). A topic is checked with
the admin client before the producer first writes to it (the producer itself never
creates one: ``allow.auto.create.topics`` is off). A missing topic is created (logged
once) with `to.create_topic` (partitions, replication factor; default 1 and 1), unless
``to.create: false``: then it is a TopicMissing error naming it: at connect() for a
literal topic (the route cannot work), at send_batch() for a templated one (that
message is dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    ConnectionLost,
    MessageRejected,
    PermanentError,
)
from natsbridge.bridge.threads import Completions, Confirms, DriverThread, Outcome, failed
from natsbridge.connectors.kafka.client import (
    CONNECT_TIMEOUT_S,
    ClientErrors,
    admin,
    bootstrap,
    create_topic,
    max_message_bytes,
    partition_count,
    reach,
    settings,
)
from natsbridge.connectors.kafka.config import KafkaConnection, KafkaSink
from natsbridge.connectors.kafka.declare import topic_declaration
from natsbridge.connectors.kafka.errors import (
    RecordTooLarge,
    TopicMissing,
    describe,
    translate,
)
from natsbridge.connectors.kafka.message import Record, record_from_envelope
from natsbridge.connectors.kafka.transactions import TRANSACTION_TIMEOUT_S, Transactions
from natsbridge.mappings.kafka import validate_topic

log = logging.getLogger("natsbridge.kafka")

LINGER_MS = 5
"""How long the producer waits to fill a batch, in milliseconds."""
BATCH_SIZE = 1024 * 1024
"""Bytes per partition batch (librdkafka's default)."""
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
"""The producer's limit on one record (and request), unless the route's max_payload is larger."""
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


@dataclass(slots=True)
class _Batch:
    """One send_batch(): its envelopes, a future each; `fresh` when nothing was outstanding."""

    envelopes: Sequence[Envelope]
    futures: list[asyncio.Future[None]]
    fresh: bool


class KafkaTopicSink:
    """Sink producing to Kafka topics; see the module docstring."""

    def __init__(
        self,
        route: Route,
        connection: KafkaConnection,
        connection_name: str,
        overrides: Mapping[str, Any] | None = None,
        transactional_id: str | None = None,
    ) -> None:
        spec = route.sink
        assert isinstance(spec, KafkaSink)
        self.spec = spec
        self.config = connection
        self.route_name = route.name
        self.transactional_id = transactional_id
        template = route.templates.get("topic")
        self.literal_topic = spec.topic if template is None or not template.placeholders else None
        max_payload = route.spec.max_payload or 0
        self.max_request_size = max(DEFAULT_MAX_REQUEST_SIZE, int(max_payload) + 64 * 1024)
        self.overrides = dict(overrides or {})
        """Extra librdkafka properties (tests and benchmarks)."""
        self._worker: _Producer | None = None
        self._error: BridgeError = ConnectionLost("kafka: sink not connected")
        self._confirms = Confirms()

    def producer_options(self) -> dict[str, Any]:
        """The Producer's librdkafka settings (error_cb is the producer's own)."""
        own: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": LINGER_MS,
            "batch.size": BATCH_SIZE,
            "compression.type": self.spec.compression,
            "message.max.bytes": self.max_request_size,
            "allow.auto.create.topics": False,
        }
        if self.transactional_id is not None:
            own["transactional.id"] = self.transactional_id
            own["transaction.timeout.ms"] = int(TRANSACTION_TIMEOUT_S * 1000)
        options = settings(self.config, ClientErrors(), **own)
        options.update(self.overrides)
        return options

    # ------------------------------------------------------------ Sink

    async def connect(self) -> None:
        """Start the producer (check or create a literal topic; init transactions)."""
        await self.close()
        worker = _Producer(self, self.producer_options())
        await worker.driver.start(
            3 * CONNECT_TIMEOUT_S + TRANSACTION_TIMEOUT_S,
            f"kafka: {bootstrap(self.config)}: sink",
            worker.stop,
        )
        self._worker = worker
        log.info(
            "kafka sink %s: producing to %s (acks=all, %s)",
            self.route_name,
            repr(self.literal_topic) if self.literal_topic else f"topic {self.spec.topic!r}",
            f"transactional.id {self.transactional_id!r}"
            if self.transactional_id
            else "idempotent",
        )

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        """Produce each envelope to the topic it names; settled once the broker acknowledged it
        (under exactly_once: once the batch's transaction committed)."""
        worker = self._worker
        if worker is None:
            error = self._error
            return await self._confirms.wait([failed(type(error)(*error.args)) for _ in envelopes])
        loop = worker.driver.loop
        waits: list[asyncio.Future[None]] = [loop.create_future() for _ in envelopes]
        fresh = not worker.waiting  # no batch outstanding: not queued behind a failure
        worker.waiting.update(waits)
        worker.outbox.put(_Batch(envelopes, waits, fresh))
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
        await worker.driver.join(CLOSE_TIMEOUT_S + TRANSACTION_TIMEOUT_S)
        worker.fail_all(self._error)


class _Producer:
    """The Producer of one `connect()`, the thread that feeds it and the one that polls it."""

    def __init__(self, sink: KafkaTopicSink, options: dict[str, Any]) -> None:
        self.sink = sink
        self.errors = ClientErrors()
        self.options = {**options, "error_cb": self.errors}
        self.outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.driver = DriverThread(f"kafka sink {sink.route_name}", self._run)
        self.producer: Producer | None = None
        self.admin: AdminClient | None = None
        self.known: set[str] = set()  # topics that exist
        self.limits: dict[str, int | None] = {}  # topic -> its max.message.bytes
        self.missing: dict[str, float] = {}  # topic -> when it was found missing
        self.broken: BridgeError | None = None  # set when the producer must be replaced
        self.transactions: Transactions | None = None  # under exactly_once
        self.polling = threading.Event()
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
                count = partition_count(self._admin(), topic)
                if count is not None and partition >= count:
                    raise PermanentError(
                        f"kafka: to.partition is {partition} but topic {topic!r} has "
                        f"{count} partitions (0-{count - 1})"
                    )
            limit = self.limits.get(topic)
            if limit is not None and limit < self.options["batch.size"]:
                # A batch larger than the topic accepts would be refused whole.
                self.options["batch.size"] = max(1024, limit - RECORD_OVERHEAD)
        try:
            producer = Producer(self.options)
        except KafkaException as exc:
            raise PermanentError(f"kafka: configuration: {translate(exc)}") from None
        self.producer = producer
        reach(producer, self.errors, sink.config)
        self.polling.set()
        threading.Thread(
            target=self._poll, name=f"kafka sink {sink.route_name} reports", daemon=True
        ).start()
        if sink.transactional_id is not None:
            self.transactions = Transactions(
                sink.config, sink.transactional_id, sink.literal_topic, sink.route_name
            )
            self.transactions.open(producer)

    def _poll(self) -> None:
        """The delivery-report thread: serves the producer's callbacks until the close."""
        producer = self.producer
        assert producer is not None
        while self.polling.is_set():
            producer.poll(0.1)

    def _admin(self) -> AdminClient:
        if self.admin is None:
            self.admin = admin(self.sink.config)
        return self.admin

    def _ensure_topic(self, topic: str) -> None:
        """Raise TopicMissing unless `topic` exists or was created now (blocking)."""
        if topic in self.known:
            return
        missing_since = self.missing.get(topic)
        if missing_since is not None and time.monotonic() - missing_since < MISSING_TOPIC_RECHECK_S:
            raise self._missing(topic)
        declaration = topic_declaration(self.sink.spec, topic, self.sink.route_name)
        if partition_count(self._admin(), topic) is None:
            if not declaration.create:
                self.missing[topic] = time.monotonic()
                raise self._missing(topic)
            create_topic(self._admin(), declaration)
        self.missing.pop(topic, None)
        self.limits[topic] = max_message_bytes(self._admin(), topic)
        self.known.add(topic)

    def _missing(self, topic: str) -> TopicMissing:
        return TopicMissing(
            topic,
            f"route {self.sink.route_name!r} does not create it (to.create is false: set it "
            f"true, or create the topic) — bootstrap servers "
            f"{bootstrap(self.sink.config)}",
        )

    def _produce(self) -> None:
        while True:
            item = self.outbox.get()
            if item is _STOP:
                return
            if self.transactions is not None:
                self._transact(self.transactions, item)
            else:
                for future, envelope in zip(item.futures, item.envelopes, strict=True):
                    error = self._send(envelope, partial(self._delivered, future))
                    if error is not None:
                        self._complete(future, error)

    def _record(self, envelope: Envelope) -> tuple[Record, int]:
        """The record of `envelope` and its size; the error if it cannot be sent (any thread)."""
        if self.broken is not None:
            raise self.broken
        record = record_from_envelope(envelope)
        if record.topic not in self.known:
            validate_topic(record.topic)
            self._ensure_topic(record.topic)
        limit = self.sink.max_request_size
        size = record_size(record.key, record.value, record.headers)
        topic_limit = self.limits.get(record.topic) or limit
        if size > min(topic_limit, limit):
            raise RecordTooLarge(
                size,
                min(topic_limit, limit),
                f"over the {'topic' if topic_limit < limit else 'producer'} limit "
                f"of {min(topic_limit, limit)} bytes (topic {record.topic!r})",
            )
        return record, size

    def _send(self, envelope: Envelope, on_delivery: Any) -> BridgeError | None:
        """Hand `envelope` to the producer (`on_delivery(size, error, message)` reports it)."""
        producer = self.producer
        assert producer is not None
        size = len(envelope.payload)
        try:
            record, size = self._record(envelope)
            while True:
                try:
                    producer.produce(
                        record.topic,
                        value=record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=self.sink.spec.partition
                        if self.sink.spec.partition is not None
                        else -1,
                        timestamp=record.timestamp_ms or 0,
                        on_delivery=partial(on_delivery, size),
                    )
                    return None
                except BufferError:  # librdkafka's queue is full: wait for reports
                    time.sleep(0.005)
        except BridgeError as exc:  # some are ValueErrors (HeaderError)
            return exc
        except KafkaException as exc:
            return translate(exc, size=size, limit=self.sink.max_request_size)
        except (ValueError, TypeError, OverflowError) as exc:
            # A value librdkafka cannot write: this message's fault, not the connection's.
            return MessageRejected(f"kafka: cannot write the record: {exc!r}")

    def _delivered(
        self, future: asyncio.Future[None], size: int, error: KafkaError | None, _message: Any
    ) -> None:
        """A delivery report (on the poll thread), at least once."""
        if error is None:
            self._complete(future, None)
            return
        outcome = translate(error, size=size, limit=self.sink.max_request_size)
        if error.fatal() and self.broken is None:
            self.broken = ConnectionLost(f"kafka: the producer must be replaced: {describe(error)}")
        self._complete(future, outcome)

    # ------------------------------------------------------------ exactly once

    def _transact(self, transactions: Transactions, batch: _Batch) -> None:
        """One batch as one transaction; its futures settle after the commit (or the abort)."""
        producer = self.producer
        assert producer is not None
        outcomes = transactions.run(producer, batch.envelopes, batch.fresh, self._send)
        self.completions.settle_all(zip(batch.futures, outcomes, strict=True))

    # ------------------------------------------------------------ closing

    def _close_clients(self) -> None:
        producer = self.producer
        if producer is not None:
            try:
                left = producer.flush(CLOSE_TIMEOUT_S)
                if left:
                    log.warning(
                        "kafka sink %s: closing with %d records unconfirmed",
                        self.sink.route_name,
                        left,
                    )
            except Exception as exc:
                log.debug("kafka sink %s: close: %s", self.sink.route_name, exc)
        self.polling.clear()
        if self.transactions is not None:
            with contextlib.suppress(Exception):
                self.transactions.close()
        self.producer = None
        self.admin = None

    def fail_all(self, error: BridgeError) -> None:
        """After the thread ended: fail sends still queued or unacknowledged."""
        self.completions.flush()
        outcomes: list[Outcome] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self.outbox.get_nowait()
                if isinstance(item, _Batch):
                    outcomes.extend((future, error) for future in item.futures)
        for future, outcome in outcomes:
            if not future.done():
                future.set_exception(outcome)
        for future in list(self.waiting):
            if not future.done():
                future.set_exception(error)
        self.waiting.clear()
