"""The embedded store's in-memory state: streams, consumers, their pending deliveries and
the writes buffered until the next flush (bridge.broker.storage keeps it in step with the
tables)."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from natsbridge.bridge.broker.config import ConsumerConfig, StreamConfig
from natsbridge.mappings.subjects import match

DeliveryRow = tuple[int, int, str, str | None, str | None, bytes, int]
"""A delivered message: (seq, time_ns, subject, msg_id, headers JSON, payload, deliveries)."""


class Clock(Protocol):
    """Wall time for timestamps, monotonic time for ack deadlines (tests pass a fake)."""

    def time_ns(self) -> int:
        """Unix time in nanoseconds."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds."""
        ...


class SystemClock:
    """The real clocks."""

    def time_ns(self) -> int:
        """time.time_ns()."""
        return time.time_ns()

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()


class FetchResult(NamedTuple):
    """What one fetch delivered, and when a pending message next falls due (monotonic)."""

    messages: list[DeliveryRow]
    wake_at: float | None


class Pending:
    """A delivered, unacked message of one consumer."""

    __slots__ = ("deadline", "deliveries", "size")

    def __init__(self, deliveries: int, deadline: float, size: int) -> None:
        self.deliveries = deliveries
        self.deadline = deadline
        self.size = size


class StreamState:
    """A stream as kept in memory: its config, counters and consumers."""

    __slots__ = (
        "bytes",
        "config",
        "consumers",
        "created",
        "deleted",
        "dirty",
        "id",
        "last_seq",
        "msgs",
    )

    def __init__(self, id: int, config: StreamConfig, last_seq: int, msgs: int, size: int) -> None:
        self.id = id
        self.config = config
        self.last_seq = last_seq
        self.msgs = msgs
        self.bytes = size
        self.created = 0
        self.consumers: dict[str, ConsumerState] = {}
        self.dirty = False
        self.deleted = False

    def accepts(self, subject: str) -> bool:
        """Whether `subject` matches the stream's subjects (any does when it has none)."""
        subjects = self.config.subjects
        return not subjects or any(match(p, subject) is not None for p in subjects)


class ConsumerState:
    """A durable consumer as kept in memory: its cursor, pending deliveries and timers."""

    __slots__ = (
        "ack_floor",
        "acked",
        "config",
        "created",
        "dead_lettered",
        "deleted",
        "delivered",
        "dirty",
        "id",
        "pending",
        "redelivered",
        "stream",
        "timers",
    )

    def __init__(self, id: int, stream: StreamState, config: ConsumerConfig) -> None:
        self.id = id
        self.stream = stream
        self.config = config
        self.delivered = 0
        self.ack_floor = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.created = 0
        self.pending: dict[int, Pending] = {}
        # (deadline, seq) heap; an entry is live while pending[seq].deadline == deadline.
        self.timers: list[tuple[float, int]] = []
        self.acked: list[int] = []  # limits retention: acks not yet written
        self.dirty = False
        self.deleted = False

    def schedule(self, seq: int, pending: Pending) -> None:
        """Arm the ack timer of `seq` for `pending.deadline`."""
        heapq.heappush(self.timers, (pending.deadline, seq))
        self.compact()

    def compact(self) -> None:
        """Drop dead heap entries once they outnumber the live ones (memory stays flat)."""
        if len(self.timers) > 2 * len(self.pending) + 64:
            # Acked entries stay in the heap until popped; rebuild before they pile up
            # (amortised O(1) per entry: a rebuild halves the heap at least).
            self.timers = [(p.deadline, s) for s, p in self.pending.items() if p.deadline >= 0]
            heapq.heapify(self.timers)


@dataclass(slots=True)
class Writes:
    """Writes buffered until the next flush (kept in application order by table)."""

    inserts: list[object]  # message rows, flattened: 7 values per row (one bind list)
    deletes: dict[int, list[int]]  # stream id -> seqs
    dedup_put: list[tuple[int, str, int, int]]
    redeliv_put: dict[tuple[int, int], int]
    redeliv_del: list[tuple[int, int]]

    @classmethod
    def empty(cls) -> Writes:
        """Nothing buffered."""
        return cls([], {}, [], {}, [])
