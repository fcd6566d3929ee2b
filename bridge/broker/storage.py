"""The embedded store's base (a layer of bridge.broker.store.Store): open and load, the
transaction and its guard, the buffered writes and their flush, and stream limits."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Self

from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    Discard,
    Retention,
    StreamConfig,
    Synchronous,
)
from natsbridge.bridge.broker.schema import (
    CHUNK,
    DB_NAME,
    SIZE_SQL,
    check_header,
    chunks,
    connect,
    corrupted,
    create_missing,
    is_corruption,
    lock_data_dir,
    prepare_data_dir,
    values_sql,
)
from natsbridge.bridge.broker.state import (
    SYSTEM_CLOCK,
    Clock,
    ConsumerState,
    Pending,
    StreamState,
    Writes,
)
from natsbridge.bridge.errors import NotFound, StoreError
from natsbridge.mappings.subjects import match

_MIN_RANGE = 7  # a run of acked seqs this long (minus one) is deleted as one range


class StoreCore:
    """The base of Store: its state, open and close, the transaction, flush and limits."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        clock: Clock,
        lock: IO[bytes] | None,
        read_only: bool,
    ) -> None:
        """Use Store.open."""
        self.path = path
        self.read_only = read_only
        self._conn = conn
        self._clock = clock
        self._lock = lock
        self._in_tx = False
        self._failed: StoreError | None = None
        self._streams: dict[str, StreamState] = {}
        self._w = Writes.empty()
        self._dirty_streams: dict[int, StreamState] = {}
        self._dirty_consumers: dict[int, ConsumerState] = {}
        self._over_limits: dict[int, StreamState] = {}
        # Message ids looked up or written since the last commit: (stream id, msg_id) ->
        # (seq, ts_ns), or None when not in the table. Write-through, so unflushed ids
        # are found too; cleared at commit, so it holds one batch at most.
        self._dedup_known: dict[tuple[int, str], tuple[int, int] | None] = {}
        self._sql: dict[tuple[str, int], str] = {}
        self._next_maintenance = 0.0
        self.appended: set[str] = set()  # streams that got messages since the last commit

    # ------------------------------------------------------------------ open and close

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        *,
        synchronous: Synchronous = Synchronous.FULL,
        create: bool = True,
        read_only: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Self:
        """Open (or create) the store in `data_dir`.

        A writer takes the data dir's lock (StoreError if another process holds it).
        `read_only` opens an existing store without the lock, for operator views while
        a bridge runs. Raises StoreCorrupted for a damaged file, never recreating it.
        """
        data_dir = Path(data_dir)
        path = data_dir / DB_NAME
        lock: IO[bytes] | None = None
        prepare_data_dir(data_dir, create=create and not read_only)
        if (read_only or not create) and not path.exists():
            raise NotFound(f"no buffer database in {data_dir} (expected {path})")
        if not read_only:
            lock = lock_data_dir(data_dir)
        try:
            create_missing(path)
            check_header(path)
            conn = connect(path, synchronous, read_only)
            store = cls(conn, path, clock, lock, read_only)
            try:
                with store._guard():
                    store._load()
                    store._conn.execute("COMMIT")
                    store._in_tx = False
            except BaseException:
                conn.close()
                raise
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        return store

    def close(self) -> None:
        """Commit what is buffered (unless the store failed) and release the file."""
        try:
            if self._failed is None and not self.read_only:
                self.commit()
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ load

    def _load(self) -> None:
        conn = self._conn
        self._begin()
        if not self.read_only:  # stores made before the index existed
            conn.execute("CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (stream, ts)")
        by_id: dict[int, StreamState] = {}
        for sid, name, config, last_seq, msgs, size, created in conn.execute(
            "SELECT id, name, config, last_seq, msgs, bytes, created FROM streams"
        ):
            st = StreamState(sid, StreamConfig.from_json(config), last_seq, msgs, size)
            st.created = created
            top = conn.execute("SELECT max(seq) FROM messages WHERE stream=?", (sid,)).fetchone()
            if top[0] is not None and top[0] > last_seq:
                raise corrupted(
                    self.path, f"stream {name!r} holds seq {top[0]} beyond its last_seq {last_seq}"
                )
            self._streams[name] = st
            by_id[sid] = st
        for row in conn.execute(
            "SELECT id, stream, name, config, delivered, ack_floor, redelivered, "
            "dead_lettered, created FROM consumers"
        ).fetchall():
            cid, sid, name, config, delivered, floor, redelivered, dead, created = row
            owner = by_id.get(sid)
            if owner is None:
                raise corrupted(self.path, f"consumer {name!r} of unknown stream id {sid}")
            c = ConsumerState(cid, owner, ConsumerConfig.from_json(config))
            c.delivered, c.ack_floor = delivered, floor
            c.redelivered, c.dead_lettered, c.created = redelivered, dead, created
            self._derive_pending(c)
            owner.consumers[name] = c

    def _derive_pending(self, c: ConsumerState) -> None:
        """Rebuild the pending set after a restart: every one is due for redelivery now."""
        conn = self._conn
        st = c.stream
        if c.delivered <= c.ack_floor:
            return
        acked: set[int] = set()
        if st.config.retention is Retention.LIMITS:
            acked = {s for (s,) in conn.execute("SELECT seq FROM acks WHERE consumer=?", (c.id,))}
        counts = dict(
            conn.execute(
                "SELECT seq, deliveries FROM redeliveries WHERE consumer=?", (c.id,)
            ).fetchall()
        )
        now = self._clock.monotonic()
        pattern = c.config.filter_subject
        for seq, subject, size in conn.execute(
            f"SELECT seq, subject, {SIZE_SQL} FROM messages WHERE stream=? AND seq>? AND seq<=? "
            "ORDER BY seq",
            (st.id, c.ack_floor, c.delivered),
        ):
            if seq in acked or (pattern is not None and match(pattern, subject) is None):
                continue
            c.pending[seq] = Pending(counts.get(seq, 1), now, size)
        c.timers = [(now, seq) for seq in c.pending]

    # ------------------------------------------------------------------ guard and transaction

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate SQLite errors; after one, the store is failed and must be reopened."""
        if self._failed is not None:
            raise self._failed_again()
        try:
            yield
        except sqlite3.Error as exc:
            error: StoreError
            if is_corruption(exc):
                error = corrupted(self.path, str(exc))
            else:
                error = StoreError(f"buffer database {self.path}: {exc}")
            self._fail(error)
            raise error from exc

    def _fail(self, error: StoreError) -> None:
        self._failed = error
        if self._in_tx:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._in_tx = False

    def _failed_again(self) -> StoreError:
        failed = self._failed
        assert failed is not None
        return type(failed)(f"the buffer store failed earlier and must be reopened: {failed}")

    @property
    def failed(self) -> StoreError | None:
        """The error that broke the store, if any (it must then be reopened)."""
        return self._failed

    def _begin(self) -> None:
        if not self._in_tx:
            self._conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> bool:
        """Write every buffered change in one transaction; durable when this returns.

        True when there was a transaction to commit.
        """
        with self._guard():
            self._flush()
            wrote = self._in_tx
            if wrote:
                self._conn.execute("COMMIT")
                self._in_tx = False
        self._dedup_known.clear()
        return wrote

    def _check_writable(self) -> None:
        if self._failed is not None:
            raise self._failed_again()
        if self.read_only:
            raise StoreError(f"buffer database {self.path} is open read-only")

    # ------------------------------------------------------------------ flush

    def _flush(self) -> None:
        """Apply buffered writes inside the current transaction (callers hold _guard)."""
        w = self._w
        if not (
            w.inserts
            or w.deletes
            or self._over_limits
            or self._dirty_streams
            or self._dirty_consumers
            or w.dedup_put
            or w.redeliv_put
            or w.redeliv_del
        ):
            return
        self._begin()
        conn = self._conn
        if w.inserts:
            flat = w.inserts
            for start, n in chunks(len(flat) // 7):
                sql = values_sql("INSERT INTO messages VALUES", 7, n, self._sql)
                conn.execute(sql, flat[start * 7 : (start + n) * 7])
            flat.clear()  # in place: the publish fast path holds this list
        if w.deletes:
            for sid, seqs in w.deletes.items():
                self._delete_seqs(sid, seqs)
            w.deletes = {}
        for st in list(self._over_limits.values()):
            self._enforce_limits(st)
        self._over_limits.clear()
        if w.dedup_put:
            rows = w.dedup_put
            for start, n in chunks(len(rows)):
                sql = values_sql("INSERT OR REPLACE INTO dedup VALUES", 4, n, self._sql)
                conn.execute(sql, [v for row in rows[start : start + n] for v in row])
            rows.clear()
        self._flush_consumers(conn)
        if w.redeliv_del or w.redeliv_put:
            self._flush_redeliveries(conn)
        self._flush_counters(conn)

    def _flush_consumers(self, conn: sqlite3.Connection) -> None:
        """Write each changed consumer's cursor, ack floor and counters (and acks)."""
        for c in self._dirty_consumers.values():
            if c.deleted:
                continue
            floor = (min(c.pending) - 1) if c.pending else c.delivered
            if c.acked:
                above = [(c.id, s) for s in c.acked if s > floor]
                if above:
                    conn.executemany("INSERT OR IGNORE INTO acks VALUES (?,?)", above)
                c.acked = []
            if floor > c.ack_floor and c.stream.config.retention is Retention.LIMITS:
                conn.execute("DELETE FROM acks WHERE consumer=? AND seq<=?", (c.id, floor))
            c.ack_floor = floor
            conn.execute(
                "UPDATE consumers SET delivered=?, ack_floor=?, redelivered=?, dead_lettered=? "
                "WHERE id=?",
                (c.delivered, c.ack_floor, c.redelivered, c.dead_lettered, c.id),
            )
            c.dirty = False
        self._dirty_consumers.clear()

    def _flush_redeliveries(self, conn: sqlite3.Connection) -> None:
        """Write the delivery counts above one, and drop those of settled messages."""
        w = self._w
        if w.redeliv_del:
            conn.executemany("DELETE FROM redeliveries WHERE consumer=? AND seq=?", w.redeliv_del)
            w.redeliv_del = []
        if w.redeliv_put:
            conn.executemany(
                "INSERT OR REPLACE INTO redeliveries VALUES (?,?,?)",
                [(cid, seq, n) for (cid, seq), n in w.redeliv_put.items()],
            )
            w.redeliv_put = {}

    def _flush_counters(self, conn: sqlite3.Connection) -> None:
        """Write each changed stream's last_seq and msgs/bytes counters."""
        for st in self._dirty_streams.values():
            if st.deleted:
                continue
            conn.execute(
                "UPDATE streams SET last_seq=?, msgs=?, bytes=? WHERE id=?",
                (st.last_seq, st.msgs, st.bytes, st.id),
            )
            st.dirty = False
        self._dirty_streams.clear()

    def _delete_seqs(self, sid: int, seqs: list[int]) -> None:
        """Delete messages by sequence: contiguous runs as ranges, the rest by IN lists."""
        seqs.sort()  # acks arrive nearly in order: Timsort makes this linear
        scattered: list[int] = []
        i, n = 0, len(seqs)
        while i < n:
            j = i
            while j + 1 < n and seqs[j + 1] == seqs[j] + 1:
                j += 1
            if j - i >= _MIN_RANGE:
                self._conn.execute(
                    "DELETE FROM messages WHERE stream=? AND seq BETWEEN ? AND ?",
                    (sid, seqs[i], seqs[j]),
                )
            else:
                scattered.extend(seqs[i : j + 1])
            i = j + 1
        for start, count in chunks(len(scattered)):
            sql = self._sql.get(("del", count))
            if sql is None:
                sql = self._sql[("del", count)] = (
                    "DELETE FROM messages WHERE stream=? AND seq IN (" + ",".join("?" * count) + ")"
                )
            self._conn.execute(sql, [sid, *scattered[start : start + count]])

    def _mark(self, st: StreamState) -> None:
        if not st.dirty:
            st.dirty = True
            self._dirty_streams[st.id] = st

    def _mark_consumer(self, c: ConsumerState) -> None:
        if not c.dirty:
            c.dirty = True
            self._dirty_consumers[c.id] = c

    # ------------------------------------------------------------------ limits

    def _over(self, st: StreamState) -> bool:
        cfg = st.config
        if cfg.discard is Discard.HOLD:  # over its limits by a batch, or lowered: kept
            return False
        return (0 < cfg.max_msgs < st.msgs) or (0 < cfg.max_bytes < st.bytes)

    def _enforce_limits(self, st: StreamState) -> None:
        """Delete the oldest messages until the stream is within max_msgs and max_bytes."""
        cfg = st.config
        while not st.deleted and self._over(st):
            excess_msgs = st.msgs - cfg.max_msgs if cfg.max_msgs else 0
            excess_bytes = st.bytes - cfg.max_bytes if cfg.max_bytes else 0
            rows = self._conn.execute(
                f"SELECT seq, {SIZE_SQL} FROM messages WHERE stream=? ORDER BY seq LIMIT ?",
                (st.id, max(min(excess_msgs, 10 * CHUNK), CHUNK)),
            ).fetchall()
            if not rows:  # counters ahead of the table: trust the table
                st.msgs, st.bytes = 0, 0
                self._mark(st)
                return
            evicted: list[tuple[int, int]] = []
            for seq, size in rows:
                if excess_msgs <= 0 and excess_bytes <= 0:
                    break
                evicted.append((seq, size))
                excess_msgs -= 1
                excess_bytes -= size
            self._evict(st, evicted)

    def _evict(self, st: StreamState, evicted: list[tuple[int, int]]) -> None:
        """Remove `evicted` (the oldest messages, in order) by limits."""
        if not evicted:
            return
        self._conn.execute(
            "DELETE FROM messages WHERE stream=? AND seq<=?", (st.id, evicted[-1][0])
        )
        st.msgs -= len(evicted)
        st.bytes -= sum(size for _, size in evicted)
        self._mark(st)
        for c in st.consumers.values():
            for seq, _ in evicted:
                p = c.pending.pop(seq, None)
                if p is not None:
                    self._forget_deliveries(c, seq, p)
                    self._mark_consumer(c)

    def _forget_deliveries(self, c: ConsumerState, seq: int, p: Pending) -> None:
        if p.deliveries >= 2:
            self._w.redeliv_put.pop((c.id, seq), None)
            self._w.redeliv_del.append((c.id, seq))

    def _settle(self, c: ConsumerState, seq: int, p: Pending) -> None:
        """`seq` (already popped from pending) is done with: acked, termed or dead-lettered."""
        st = c.stream
        if st.config.retention is Retention.WORKQUEUE:
            seqs = self._w.deletes.get(st.id)
            if seqs is None:
                seqs = self._w.deletes[st.id] = []
            seqs.append(seq)
            st.msgs -= 1
            st.bytes -= p.size
            if not st.dirty:
                st.dirty = True
                self._dirty_streams[st.id] = st
        else:
            c.acked.append(seq)
        if p.deliveries >= 2:
            self._forget_deliveries(c, seq, p)
        if not c.dirty:
            c.dirty = True
            self._dirty_consumers[c.id] = c

    def _stream(self, name: str) -> StreamState:
        st = self._streams.get(name)
        if st is None:
            raise NotFound(f"no stream {name!r}")
        return st

    def _consumer(self, stream: str, name: str) -> ConsumerState:
        c = self._stream(stream).consumers.get(name)
        if c is None:
            raise NotFound(f"no consumer {name!r} on stream {stream!r}")
        return c
