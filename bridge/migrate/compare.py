"""Parity of a migration: pairing the messages both sides saw over a window.

Each side is read into `Seen` records: where the message is (its coordinates: topic,
partition and offset, a parity tap's ledger position, a JetStream sequence), when, and a
content digest of key + payload + the migration's chosen headers, all in their NATS form
(the legacy side is converted with the connector's own header mapping, so both sides hash
the same bytes). `compare` pairs them:

* by shared coordinates where the NATS copy carries them (``Kafka-Topic``/``-Partition``/
  ``-Offset``): a pair whose digests differ is `differ`, a second copy is a duplicate;
* by digest otherwise (a RabbitMQ message has no coordinates its copy could name); such
  copies stored before the first one that pairs are context (their originals may predate
  the tap that recorded the legacy side).

A legacy message without a copy is `missing` when the mirror has already copied a later
message of the same group (partition or queue), else `pending` (not copied yet: lag, not
loss). A NATS message without a legacy original inside the window is `extra`. Only
messages inside the window are reported; the ones just outside it are read as context so
that a copy made a little after its original is still paired.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Value = str | int | float | None
Coordinates = dict[str, Value]
Where = tuple[tuple[str, Value], ...]
"""Coordinates as (name, value) pairs: a third of a dict's memory, held per message."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as one side saw it."""

    group: str  # "topic/partition", the tap queue: the unit in which the side keeps order
    position: int  # its order within the group (offset, ledger id, stream sequence)
    where: Where  # what the report prints to find it (the pair key's names when empty)
    digest: str
    in_window: bool = True
    pair_key: tuple[str, int, int] | None = None  # (topic, partition, offset) when known

    def coordinates(self) -> Coordinates:
        """Where the message is, by name."""
        if not self.where and self.pair_key is not None:
            topic, partition, offset = self.pair_key
            return {"topic": topic, "partition": partition, "offset": offset}
        return dict(self.where)


@dataclass(frozen=True, slots=True)
class ParityReport:
    """What `natsbridge migrate verify` prints; `ok` when nothing is missing, extra or differs."""

    migration: str
    window_s: float
    counts: dict[str, dict[str, int]]  # side ("legacy", "nats") -> group -> messages
    missing: list[Coordinates] = field(default_factory=list)
    extra: list[Coordinates] = field(default_factory=list)
    differ: list[dict[str, Coordinates]] = field(default_factory=list)
    pending: int = 0  # legacy messages the mirror has not reached yet
    duplicates: int = 0  # second copies of one legacy message (at_least_once after a crash)
    digests: dict[str, dict[str, str]] = field(default_factory=dict)  # side -> group -> hash

    @property
    def ok(self) -> bool:
        """True when both sides hold the same messages (pending and duplicates allowed)."""
        return not (self.missing or self.extra or self.differ)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "migration": self.migration,
            "window_s": self.window_s,
            "ok": self.ok,
            "counts": self.counts,
            "digests": self.digests,
            "missing": self.missing,
            "extra": self.extra,
            "differ": self.differ,
            "pending": self.pending,
            "duplicates": self.duplicates,
        }


def content_digest(
    key: bytes | None, payload: bytes, headers: Mapping[str, Sequence[str]], names: Iterable[str]
) -> str:
    """SHA-256 (hex, 32 digits) of key + payload + the chosen headers, length-prefixed."""
    hasher = hashlib.sha256()

    def put(data: bytes | None) -> None:
        if data is None:
            hasher.update(b"-")
        else:
            hasher.update(b"%d:" % len(data))
            hasher.update(data)

    put(key)
    put(payload)
    for name in sorted(set(names)):
        values = headers.get(name)
        put(name.encode("utf-8", "surrogateescape"))
        hasher.update(b"%d;" % (len(values) if values else 0))
        for value in values or ():
            put(value.encode("utf-8", "surrogateescape"))
    return hasher.hexdigest()[:32]


def compare(
    migration: str, window_s: float, legacy: Sequence[Seen], nats: Sequence[Seen]
) -> ParityReport:
    """Pair the two sides' messages and report what is missing, extra or different."""
    by_key = {seen.pair_key: seen for seen in legacy if seen.pair_key is not None}
    paired: set[int] = set()  # id() of paired legacy records
    differ: list[dict[str, Coordinates]] = []
    duplicates = 0
    unkeyed: list[Seen] = []
    for copy in nats:
        original = by_key.get(copy.pair_key) if copy.pair_key is not None else None
        if original is None:
            unkeyed.append(copy)
            continue
        if id(original) in paired:
            duplicates += 1
            continue
        paired.add(id(original))
        if original.digest != copy.digest and (original.in_window or copy.in_window):
            differ.append({"legacy": original.coordinates(), "nats": copy.coordinates()})
    # Messages without shared coordinates pair by digest, oldest with oldest.
    waiting: dict[str, list[Seen]] = defaultdict(list)
    for seen in sorted(legacy, key=lambda s: (s.group, s.position)):
        if id(seen) not in paired:
            waiting[seen.digest].append(seen)
    bounds = _bounds(legacy)
    unpaired: list[Seen] = []
    first_paired: int | None = None
    for copy in unkeyed:
        candidates = waiting.get(copy.digest)
        if candidates:
            paired.add(id(candidates.pop(0)))
            if copy.pair_key is None and (first_paired is None or copy.position < first_paired):
                first_paired = copy.position
        elif copy.in_window and _inside(copy.pair_key, bounds):
            unpaired.append(copy)
    # Copies paired by digest only come from a tap that opened at some point: those stored
    # before the first paired one may have originals from before it (context, not extra).
    context = {
        id(copy)
        for copy in unpaired
        if copy.pair_key is None and first_paired is not None and copy.position < first_paired
    }
    extra = [copy.coordinates() for copy in unpaired if id(copy) not in context]
    reached: dict[str, int] = {}
    for seen in legacy:
        if id(seen) in paired:
            reached[seen.group] = max(reached.get(seen.group, -1), seen.position)
    copies = [copy for copy in nats if id(copy) not in context]
    missing: list[Coordinates] = []
    pending = 0
    for seen in legacy:
        if id(seen) in paired or not seen.in_window:
            continue
        if seen.position < reached.get(seen.group, -1):
            missing.append(seen.coordinates())
        else:
            pending += 1
    return ParityReport(
        migration=migration,
        window_s=window_s,
        counts={"legacy": _counts(legacy), "nats": _counts(copies)},
        digests={"legacy": _digests(legacy), "nats": _digests(copies)},
        missing=missing,
        extra=extra,
        differ=differ,
        pending=pending,
        duplicates=duplicates,
    )


def _bounds(legacy: Sequence[Seen]) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> first and last offset read inside the window."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for seen in legacy:
        if seen.pair_key is not None and seen.in_window:
            topic, partition, offset = seen.pair_key
            low, high = out.get((topic, partition), (offset, offset))
            out[(topic, partition)] = (min(low, offset), max(high, offset))
    return out


def _inside(
    pair_key: tuple[str, int, int] | None, bounds: dict[tuple[str, int], tuple[int, int]]
) -> bool:
    """Whether a copy's coordinates fall in the legacy side's window (None: no coordinates).

    A copy of a record from before the window (read as context) or produced after the
    legacy side was read is not extra; a copy naming a record the window should hold is.
    """
    if pair_key is None:
        return True
    topic, partition, offset = pair_key
    low, high = bounds.get((topic, partition), (0, -1))
    return low <= offset <= high


def _counts(seen: Sequence[Seen]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in seen:
        if item.in_window:
            counts[item.group] += 1
    return dict(sorted(counts.items()))


def _digests(seen: Sequence[Seen]) -> dict[str, str]:
    """One order-independent digest per group: the XOR of its messages' digests."""
    out: dict[str, int] = defaultdict(int)
    for item in seen:
        if item.in_window:
            out[item.group] ^= int(item.digest, 16)
    return {group: f"{value:032x}" for group, value in sorted(out.items())}
