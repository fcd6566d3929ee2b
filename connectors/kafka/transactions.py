"""Exactly once into Kafka: one transaction per delivery window, and where to resume.

A sink of a `delivery: exactly_once` route produces with ``transactional.id`` =
``<bridge id>.<route>``. `Transactions.open()` calls `init_transactions()`, which fences
every earlier producer with that id (a previous incarnation of this bridge, killed or
not) and aborts its open transaction. Each window (`Transactions.run`) is one
transaction: begin, produce every record, commit; the window's futures resolve only
after the commit, so the runtime settles the buffer only for committed records.

Failure. When the commit fails the transaction is aborted and every record of the
window fails with a RetryableError (a record the broker refused alone fails with its own
PermanentError and is dead-lettered; records refused together in one produce batch fail
as a ConnectionLost, so that the runtime sends them one at a time to find the bad one),
and so does every window queued behind it before the runtime saw the failure (`fresh`),
so that windows commit in buffer order. The producer is spent after an abort: the
runtime reconnects, which makes a new one.

Resuming. The one gap left by "settle after commit" is a bridge killed after a commit and
before the buffer settled that window: the window comes again from the buffer. So each
transaction also commits, atomically with the records, a marker: an offset of the group
``natsbridge-eos.<transactional.id>`` on partition 0 of the sink's topic (of
``__consumer_offsets`` for a templated topic), whose metadata names the last three
committed windows by a hash of the message id (`Envelope.msg_id`, always set under
exactly_once) of their first and last record, and their size. After `open()` the first
window is compared with it: when its first message is the first of a committed window,
the messages up to the last of the last committed window were committed already and are
confirmed without being sent again. Windows are settled in order, so what the buffer
gives again after a crash starts with a whole committed window or with nothing committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError, ConnectionLost, PermanentError, RetryableError
from natsbridge.connectors.kafka.client import ClientErrors, settings
from natsbridge.connectors.kafka.config import TRANSACTIONS_NEED, KafkaConnection
from natsbridge.connectors.kafka.errors import describe, translate

log = logging.getLogger("natsbridge.kafka")

TRANSACTION_TIMEOUT_S = 60.0
"""How long init_transactions, commit_transaction and abort_transaction may take."""
REPORTS_TIMEOUT_S = 10.0
"""How long an abort waits for its records' delivery reports (they say which was refused)."""
REMEMBERED_WINDOWS = 3
"""Committed windows the marker names: more than can be committed and not yet settled."""
MARKER_TOPIC_TEMPLATED = "__consumer_offsets"
"""The marker's topic when the sink's topic is a template (partition 0 always exists)."""

Outcomes = list[BaseException | None]
Send = Callable[[Envelope, Callable[..., None]], BridgeError | None]
"""Hands one envelope to the producer with its delivery callback; its error, if refused."""


def _hash(envelope: Envelope) -> str | None:
    msg_id = envelope.msg_id
    return hashlib.sha256(msg_id.encode()).hexdigest()[:16] if msg_id is not None else None


@dataclass(slots=True)
class _Reports:
    """The delivery reports of one transaction's records, filled by the poll thread."""

    produced: int = 0
    reported: int = 0
    errors: dict[int, KafkaError] = field(default_factory=dict)


class Transactions:
    """The transactional side of one producer (one `connect()` of a sink)."""

    def __init__(
        self, config: KafkaConnection, transactional_id: str, topic: str | None, route: str
    ) -> None:
        self.config = config
        self.transactional_id = transactional_id
        self.marker_topic = topic or MARKER_TOPIC_TEMPLATED
        self.route = route
        self.windows: deque[tuple[str, str, int]] = deque(maxlen=REMEMBERED_WINDOWS)
        self.count = 0  # windows committed (the marker's offset)
        self.checking = True  # the next window is the first since open(): compare it
        self.skip_until: str | None = None  # committed already, up to this message's hash
        self.aborted = False  # the last transaction was aborted
        self.pending = False  # a window was added to `windows` for the marker, not committed
        self.broken: BridgeError | None = None  # set once this producer is spent
        self.consumer: Consumer | None = None
        self.group: Any = None

    # ------------------------------------------------------------ open and close

    def open(self, producer: Producer) -> None:
        """Fence earlier producers, then read the marker (blocking)."""
        try:
            producer.init_transactions(TRANSACTION_TIMEOUT_S)
            consumer = self.consumer = Consumer(
                settings(
                    self.config,
                    ClientErrors(),
                    **{
                        "group.id": f"natsbridge-eos.{self.transactional_id}",
                        "isolation.level": "read_committed",
                        "enable.auto.commit": False,
                    },
                )
            )
            self.group = consumer.consumer_group_metadata()
            [marker] = consumer.committed(
                [TopicPartition(self.marker_topic, 0)], timeout=TRANSACTION_TIMEOUT_S
            )
        except KafkaException as exc:
            error = translate(exc)
            raise type(error)(
                f"kafka: init_transactions for transactional.id {self.transactional_id!r} "
                f"failed: {error}; {TRANSACTIONS_NEED}"
            ) from None
        if marker.offset >= 0 and marker.metadata:
            self.count = marker.offset
            with_sizes = json.loads(marker.metadata).get("windows", [])
            self.windows.extend((first, last, size) for first, last, size in with_sizes)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    # ------------------------------------------------------------ one window

    def run(
        self, producer: Producer, envelopes: Sequence[Envelope], fresh: bool, send: Send
    ) -> Outcomes:
        """The outcome of each envelope of one window, sent as one transaction."""
        if self.aborted and not fresh:
            retry = RetryableError(
                "kafka: an earlier window's transaction was aborted; sent again in order"
            )
            return [retry] * len(envelopes)
        self.aborted = False
        outcomes: Outcomes = [None] * len(envelopes)
        start = self._committed_before(envelopes)
        if start == len(envelopes):
            return outcomes
        reports = _Reports()
        produced: list[Envelope] = []
        try:
            if self.broken is not None:
                raise self.broken
            producer.begin_transaction()
            for index in range(start, len(envelopes)):
                envelope = envelopes[index]
                error = send(envelope, self._reporter(reports, index))
                if error is None:
                    reports.produced += 1
                    produced.append(envelope)
                else:
                    outcomes[index] = error
            if produced:
                self._mark(producer, produced)
            self._commit(producer)
        except BaseException as exc:
            if self.pending:
                self.windows.pop()
            self.aborted = True
            self._abort(producer, reports, translate(exc), start, outcomes)
        finally:
            self.pending = False
        return outcomes

    def _committed_before(self, envelopes: Sequence[Envelope]) -> int:
        """How many of the first `envelopes` a transaction committed already (see module doc)."""
        if self.checking:
            self.checking = False
            first = _hash(envelopes[0]) if envelopes else None
            for index, (window_first, _, _) in enumerate(self.windows):
                if first is not None and first == window_first:
                    self.skip_until = self.windows[-1][1]
                    log.info(
                        "kafka sink %s: resuming after %d committed windows not yet settled",
                        self.route,
                        len(self.windows) - index,
                    )
                    break
        skipped = 0
        while self.skip_until is not None and skipped < len(envelopes):
            if _hash(envelopes[skipped]) == self.skip_until:
                self.skip_until = None
            skipped += 1
        return skipped

    def _mark(self, producer: Producer, produced: list[Envelope]) -> None:
        """Commit the marker with this transaction: it names this window and the two before."""
        first, last = _hash(produced[0]), _hash(produced[-1])
        if first is None or last is None:
            return
        self.windows.append((first, last, len(produced)))
        self.pending = True
        metadata = json.dumps({"windows": list(self.windows)}, separators=(",", ":"))
        marker = TopicPartition(self.marker_topic, 0, self.count + 1, metadata=metadata)
        producer.send_offsets_to_transaction([marker], self.group, TRANSACTION_TIMEOUT_S)

    def _commit(self, producer: Producer) -> None:
        deadline = time.monotonic() + TRANSACTION_TIMEOUT_S
        while True:
            try:
                producer.commit_transaction(TRANSACTION_TIMEOUT_S)
                if self.pending:
                    self.count += 1
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not error.retriable() or time.monotonic() >= deadline:
                    raise

    def _reporter(self, reports: _Reports, index: int) -> Callable[..., None]:
        def reported(_size: int, error: KafkaError | None, _message: Any) -> None:
            """A delivery report of a transactional record (on the poll thread)."""
            if error is not None:
                reports.errors[index] = error
                if error.fatal() and self.broken is None:
                    self.broken = ConnectionLost(
                        f"kafka: the producer must be replaced: {describe(error)}"
                    )
            reports.reported += 1

        return reported

    def _abort(
        self,
        producer: Producer,
        reports: _Reports,
        cause: BridgeError,
        start: int,
        outcomes: Outcomes,
    ) -> None:
        """Abort the open transaction: refused records fail for good, the rest are retried.

        The producer is spent either way (librdkafka may carry the aborted sequence
        numbers over: the next transaction failed OUT_OF_ORDER_SEQUENCE_NUMBER), so every
        later window fails with ConnectionLost until the runtime reconnects.
        """
        aborted = self.broken or ConnectionLost(
            f"kafka: transaction aborted ({cause}); sent again on a new producer"
        )
        if self.broken is None:
            self.broken = aborted
            log.warning("kafka sink %s: %s", self.route, aborted)
            try:
                producer.abort_transaction(TRANSACTION_TIMEOUT_S)
            except KafkaException as exc:
                log.debug("kafka sink %s: abort: %s", self.route, translate(exc))
            deadline = time.monotonic() + REPORTS_TIMEOUT_S
            while reports.reported < reports.produced and time.monotonic() < deadline:
                time.sleep(0.01)  # the aborted records' reports say which the broker refused
        refusals = {
            index: refused
            for index, reported in reports.errors.items()
            if isinstance(refused := translate(reported), PermanentError)
        }
        for index in range(start, len(outcomes)):
            if outcomes[index] is not None:
                continue  # refused before it was produced
            refused = refusals.get(index)
            if refused is None:
                outcomes[index] = aborted
            elif len(refusals) == 1:
                outcomes[index] = refused  # the broker refused this record alone
            else:
                outcomes[index] = ConnectionLost(
                    f"kafka: the broker refused a batch of {len(refusals)} records "
                    f"({refused}); they are sent again to find the one it refuses"
                )
