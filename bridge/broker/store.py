"""The embedded broker's storage: one SQLite file per data dir, and the state kept over it.

`Store` is synchronous and single-threaded. `Broker` (bridge.broker.broker) runs one on
its writer thread and batches many calls into one transaction; the CLI and the tests use
it directly. Every method buffers its writes; `commit()` writes them in one transaction
and returns once it is on disk (with ``synchronous=FULL``, SQLite fsyncs the WAL on
commit). Nothing a method returns is durable until the next `commit()`.

`Store` is built in layers, one module each, each a base of the next:

* bridge.broker.schema: the file (schema, stored headers, create, check, lock, open);
* bridge.broker.state: the in-memory state of streams, consumers and pending deliveries;
* bridge.broker.storage (`StoreCore`): open and load, transaction, flush, limits;
* bridge.broker.streams: streams and consumers, reading messages, counters;
* bridge.broker.append: publish, and the duplicate window;
* bridge.broker.dead_letters: dead letters and their replay;
* bridge.broker.consume: fetch, and the ack state of each delivery;
* here: maintenance (dedup pruning, max_age, free pages) and the integrity check.
"""

from __future__ import annotations

from natsbridge.bridge.broker.consume import ConsumeStore
from natsbridge.bridge.broker.schema import (
    DB_NAME,
    LOCK_NAME,
    PAGE_SIZE,
    SIZE_SQL,
    decode_headers,
    encode_headers,
)
from natsbridge.bridge.broker.state import StreamState
from natsbridge.bridge.errors import StoreError

__all__ = [
    "DB_NAME",
    "LOCK_NAME",
    "MAINTENANCE_INTERVAL_S",
    "PAGE_SIZE",
    "Store",
    "decode_headers",
    "encode_headers",
]

MAINTENANCE_INTERVAL_S = 1.0  # dedup pruning, max_age expiry
VACUUM_STEP_PAGES = 512  # pages returned per idle incremental_vacuum step
VACUUM_MIN_FREE_PAGES = 2048  # free pages below which no space is reclaimed
_EXPIRE_BATCH = 1000


class Store(ConsumeStore):
    """Streams and consumers in one SQLite database; one thread at a time (see module doc)."""

    # ------------------------------------------------------------------ maintenance

    def maintain(self, *, idle: bool) -> None:
        """Housekeeping, at most once per MAINTENANCE_INTERVAL_S: prune the dedup window,
        expire messages past max_age, and (only when `idle`) reclaim free pages a step at
        a time. Writes are buffered like any other (commit afterwards)."""
        if self.read_only or self._failed is not None:
            return
        now = self._clock.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + MAINTENANCE_INTERVAL_S
        with self._guard():
            now_ns = self._clock.time_ns()
            for st in list(self._streams.values()):
                self._prune_dedup(st, now_ns)
                if st.config.max_age and st.msgs:
                    self._expire(st, now_ns - int(st.config.max_age * 1e9))
            if idle:
                self._vacuum_step()

    def _prune_dedup(self, st: StreamState, now_ns: int) -> None:
        cutoff = now_ns - int(st.config.duplicate_window * 1e9)
        self._flush()
        self._begin()
        self._conn.execute("DELETE FROM dedup WHERE stream=? AND ts<?", (st.id, cutoff))

    def _expire(self, st: StreamState, cutoff_ns: int) -> None:
        self._flush()
        self._begin()
        while True:
            rows = self._conn.execute(
                f"SELECT seq, ts, {SIZE_SQL} FROM messages WHERE stream=? ORDER BY seq LIMIT ?",
                (st.id, _EXPIRE_BATCH),
            ).fetchall()
            old: list[tuple[int, int]] = []
            for seq, ts, size in rows:
                if ts >= cutoff_ns:
                    break
                old.append((seq, size))
            self._evict(st, old)
            if len(old) < _EXPIRE_BATCH:
                return

    def _vacuum_step(self) -> None:
        """Return up to VACUUM_STEP_PAGES free pages to the file system, when worth it.

        Runs as its own small transaction after committing what is buffered (Python's
        sqlite3 only steps `PRAGMA incremental_vacuum` to completion in executescript,
        which commits first). A full VACUUM never runs.
        """
        conn = self._conn
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free < VACUUM_MIN_FREE_PAGES:
            return
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        if free * 10 < pages:  # under 10 % free: reuse beats moving pages around
            return
        self._flush()
        if self._in_tx:
            conn.execute("COMMIT")
            self._in_tx = False
        conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP_PAGES});")

    def integrity_check(self) -> list[str]:
        """SQLite's `PRAGMA integrity_check` plus the store's own counters; [] when sound."""
        try:
            with self._guard():
                self._flush()
                self._begin()
                problems = [
                    str(r[0])
                    for r in self._conn.execute("PRAGMA integrity_check").fetchall()
                    if r[0] != "ok"
                ]
        except StoreError as exc:  # damage bad enough to stop the check itself
            return [str(exc)]
        if problems:
            return problems
        with self._guard():
            for name in self.stream_names():
                st = self._streams[name]
                count, size, top = self._conn.execute(
                    f"SELECT count(*), coalesce(sum({SIZE_SQL}), 0), max(seq) FROM messages "
                    "WHERE stream=?",
                    (st.id,),
                ).fetchone()
                if count != st.msgs or size != st.bytes:
                    problems.append(
                        f"stream {name!r}: counters say {st.msgs} messages / {st.bytes} bytes, "
                        f"table holds {count} / {size}"
                    )
                if top is not None and top > st.last_seq:
                    problems.append(f"stream {name!r}: seq {top} beyond last_seq {st.last_seq}")
            return problems
