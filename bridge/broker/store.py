"""The embedded broker's storage: one SQLite file per data dir, and the state kept over it.

`Store` is synchronous and single-threaded. `Broker` (bridge.broker.broker) runs one on
its writer thread and batches many calls into one transaction; the CLI and the tests use
it directly. Every method buffers its writes; `commit()` writes them in one transaction
and returns once it is on disk (with ``synchronous=FULL``, SQLite fsyncs the WAL on
commit). Nothing a method returns is durable until the next `commit()`.

Schema
------
Six tables, each the direct image of one JetStream notion, and nothing else::

    streams      (id, name, config JSON, last_seq, msgs, bytes, created)
    messages     (stream, seq, ts, subject, msg_id, headers JSON, payload)  PK (stream, seq)
    consumers    (id, stream, name, config JSON, delivered, ack_floor,
                  redelivered, dead_lettered, created)
    acks         (consumer, seq)              acks above the floor (limits retention only)
    redeliveries (consumer, seq, deliveries)  only for messages delivered twice or more
    dedup        (stream, msg_id, seq, ts)    message ids inside the duplicate window

Why this is the simple one:

* A message is one row, written once. A work-queue ack is the ``DELETE`` of that row,
  so the hot path (append, deliver, ack) costs one insert and one delete per message
  and no per-message consumer bookkeeping at all.
* A consumer is one row: ``delivered`` (highest sequence handed out) and ``ack_floor``
  (everything at or below it is done). The pending set is not stored: it is *derived*
  on open as the messages still present in ``(ack_floor, delivered]`` that match the
  filter and have no row in ``acks``, and all of them are due for redelivery at once.
  So a crash can neither lose an unacked message (it is still in the table) nor bring
  back an acked one (its row is gone, or listed in ``acks``, in the same transaction).
* ``acks`` only exists for limits-retention streams, where an acked message stays for
  other readers; rows at or below the floor are trimmed as it advances.
* ``redeliveries`` holds a delivery count only once it exceeds one; a first delivery is
  implied by ``seq <= delivered``. ``max_deliver`` therefore survives restarts without a
  write per delivery (the cursor update is one row per fetch, not per message).
* ``streams`` keeps ``last_seq`` (sequences are never reused, even after every message
  was deleted) and the ``msgs``/``bytes`` counters, updated in the same transaction as
  the rows they count, so opening a stream of a million messages reads one row instead
  of scanning a gigabyte.
* ``dedup`` is separate from ``messages`` because a message id must stay known for the
  whole window even after its message was acked and deleted (``exactly_once`` replays
  a source message after a crash, possibly long after delivery). It lives only on disk
  (looked up once per batch, pruned by its ``(stream, ts)`` index), so memory does not
  grow with rate x window (2 minutes at 80k msg/s is ten million ids); the price is one
  b-tree insert per id, cheapest when ids arrive in order (source coordinates do).
* ``PRIMARY KEY (stream, seq)`` on a rowid table keeps rows of 1 KiB out of the key
  b-tree (a WITHOUT ROWID table of large rows measured 2.5x slower here).
* Configs are JSON text, headers are JSON text and timestamps are unix nanoseconds, so
  the file is readable with nothing but the ``sqlite3`` shell.

The file is created under a temporary name and renamed into place, so an existing
``buffer.db`` always has its schema; a file that is empty, truncated, not SQLite or not
ours raises StoreCorrupted and is never recreated. ``auto_vacuum=INCREMENTAL`` lets
idle-time maintenance return free pages in small steps; a full VACUUM never runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, Protocol

from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    ConsumerInfo,
    Discard,
    Outgoing,
    PubAck,
    Retention,
    StoredMessage,
    StreamConfig,
    StreamInfo,
    Synchronous,
)
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import (
    BridgeError,
    NotFound,
    PayloadTooLarge,
    StoreCorrupted,
    StoreError,
    StreamFull,
    SubjectError,
)
from natsbridge.mappings.headers import (
    BRIDGE_DEAD_LETTER_SEQ,
    BRIDGE_DEAD_LETTER_STREAM,
    BRIDGE_DELIVERIES,
    BRIDGE_REASON,
)
from natsbridge.mappings.subjects import match

log = logging.getLogger("natsbridge.broker")

DEAD_LETTER_HEADERS = frozenset(
    {BRIDGE_REASON, BRIDGE_DEAD_LETTER_STREAM, BRIDGE_DEAD_LETTER_SEQ, BRIDGE_DELIVERIES}
)
"""Headers a dead letter gets, removed again when it is replayed into its stream."""

DB_NAME = "buffer.db"
"""The database file inside a data dir."""
LOCK_NAME = "buffer.lock"
"""Held (flock) by the one process that writes the data dir."""
DIR_MODE = 0o700  # a data dir the store creates
FILE_MODE = 0o600  # buffer.db (and so its -wal, -shm) and buffer.lock, when created
SCHEMA_VERSION = 1
APPLICATION_ID = 0x4E425247  # "NBRG" in the SQLite header: this file is ours
PAGE_SIZE = 8192  # bytes; measured faster than 4096 for appends of 1 KiB rows
CACHE_SIZE_KIB = 65536  # page cache per connection
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # WAL bytes kept after a checkpoint
MAINTENANCE_INTERVAL_S = 1.0  # dedup pruning, max_age expiry
VACUUM_STEP_PAGES = 512  # pages returned per idle incremental_vacuum step
VACUUM_MIN_FREE_PAGES = 2048  # free pages below which no space is reclaimed
_CHUNK = 512  # rows per multi-row INSERT / IN list (binds stay under SQLite's 32766)
_EXPIRE_BATCH = 1000
_MIN_RANGE = 7  # a run of acked seqs this long (minus one) is deleted as one range

DeliveryRow = tuple[int, int, str, str | None, str | None, bytes, int]
"""A delivered message: (seq, time_ns, subject, msg_id, headers JSON, payload, deliveries)."""

_SCHEMA = """
CREATE TABLE streams (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    config   TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    msgs     INTEGER NOT NULL,
    bytes    INTEGER NOT NULL,
    created  INTEGER NOT NULL
);
CREATE TABLE messages (
    stream  INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    ts      INTEGER NOT NULL,
    subject TEXT NOT NULL,
    msg_id  TEXT,
    headers TEXT,
    payload BLOB NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE consumers (
    id            INTEGER PRIMARY KEY,
    stream        INTEGER NOT NULL,
    name          TEXT NOT NULL,
    config        TEXT NOT NULL,
    delivered     INTEGER NOT NULL,
    ack_floor     INTEGER NOT NULL,
    redelivered   INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL,
    created       INTEGER NOT NULL,
    UNIQUE (stream, name)
);
CREATE TABLE acks (
    consumer INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE TABLE redeliveries (
    consumer   INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (consumer, seq)
) WITHOUT ROWID;
CREATE TABLE dedup (
    stream INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    PRIMARY KEY (stream, msg_id)
) WITHOUT ROWID;
CREATE INDEX dedup_by_time ON dedup (stream, ts);
"""

_ROW = "seq, ts, subject, msg_id, headers, payload"
_SIZE = "length(payload) + length(subject) + coalesce(length(headers), 0)"


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


_SEP = "\x1f"  # ASCII unit separator


def encode_headers(headers: Headers | None) -> str | None:
    """Headers as stored, or NULL when there are none.

    Usually name/value pairs separated by, and behind, a unit separator (U+001F; a
    name with several values repeats): a third of the cost of JSON both ways, and
    headers are encoded and decoded once per buffered message. Headers that contain a
    U+001F or a NUL (SQLite's length() would stop there), or a name without values, are
    stored as compact JSON, which starts with "{" and escapes both.
    """
    if not headers:
        return None
    flat = [""]
    add = flat.append
    for name, values in headers.items():
        if not values:
            return _json_headers(headers)
        for value in values:
            add(name)
            add(value)
    text = _SEP.join(flat)
    if text.count(_SEP) != len(flat) - 1 or "\x00" in text:
        return _json_headers(headers)
    return text


def _json_headers(headers: Headers) -> str:
    return json.dumps(headers, separators=(",", ":"), ensure_ascii=False)


def decode_headers(text: str | None) -> Headers:
    """Inverse of encode_headers."""
    if text is None:
        return {}
    if not text.startswith(_SEP):
        value: Headers = json.loads(text)
        return value
    parts = text.split(_SEP)
    headers: Headers = {}
    for index in range(1, len(parts), 2):
        name = parts[index]
        values = headers.get(name)
        if values is None:
            headers[name] = [parts[index + 1]]
        else:
            values.append(parts[index + 1])
    return headers


def _size(subject: str, headers: str | None, payload: bytes) -> int:
    # Same measure as the SQL expression _SIZE (length() counts characters of TEXT).
    return len(payload) + len(subject) + (len(headers) if headers is not None else 0)


# ---------------------------------------------------------------------- in-memory state


class _Pending:
    """A delivered, unacked message of one consumer."""

    __slots__ = ("deadline", "deliveries", "size")

    def __init__(self, deliveries: int, deadline: float, size: int) -> None:
        self.deliveries = deliveries
        self.deadline = deadline
        self.size = size


class _Stream:
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
        self.consumers: dict[str, _Consumer] = {}
        self.dirty = False
        self.deleted = False

    def accepts(self, subject: str) -> bool:
        subjects = self.config.subjects
        return not subjects or any(match(p, subject) is not None for p in subjects)


class _Consumer:
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

    def __init__(self, id: int, stream: _Stream, config: ConsumerConfig) -> None:
        self.id = id
        self.stream = stream
        self.config = config
        self.delivered = 0
        self.ack_floor = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.created = 0
        self.pending: dict[int, _Pending] = {}
        # (deadline, seq) heap; an entry is live while pending[seq].deadline == deadline.
        self.timers: list[tuple[float, int]] = []
        self.acked: list[int] = []  # limits retention: acks not yet written
        self.dirty = False
        self.deleted = False

    def schedule(self, seq: int, pending: _Pending) -> None:
        heapq.heappush(self.timers, (pending.deadline, seq))
        self.compact()

    def compact(self) -> None:
        """Drop dead heap entries once they outnumber the live ones (memory stays flat)."""
        if len(self.timers) > 2 * len(self.pending) + 64:
            # Acked entries stay in the heap until popped; rebuild before they pile up
            # (amortised O(1) per entry: a rebuild halves the heap at least).
            self.timers = [(p.deadline, s) for s, p in self.pending.items() if p.deadline >= 0]
            heapq.heapify(self.timers)


# ---------------------------------------------------------------------- errors and files


_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _CORRUPT_CODES


def corrupted(path: Path, detail: str) -> StoreCorrupted:
    """The error for a damaged database file, with what the operator can do."""
    return StoreCorrupted(
        f"buffer database {path} is damaged ({detail}); it was left untouched. "
        f"Run `natsbridge streams --data-dir {path.parent} --check`, then restore it from "
        "a backup or move it aside to start with an empty buffer."
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_database(path: Path) -> None:
    """Create an empty store under a temporary name and rename it into place."""
    tmp = path.with_name(path.name + ".new")
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{tmp}{suffix}")
    # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
    # database file's mode, so the messages are never readable by other users.
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.executescript(f"BEGIN;{_SCHEMA}COMMIT;")
        conn.execute("PRAGMA journal_mode=WAL")  # recorded in the file header
    finally:
        conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _check_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read buffer database {path}: {exc}") from exc
    if size == 0:
        raise corrupted(path, "the file is empty")
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise corrupted(path, "not an SQLite database: bad header")


def _prepare_data_dir(data_dir: Path, create: bool) -> None:
    """Check that `data_dir` can hold a store; with `create`, make it (0700) if missing.

    An existing directory keeps its mode (the operator may share it on purpose, with a
    backup agent for one). A `buffer.db` that is a symbolic link must point to a file:
    creating a new, empty database in place of a dangling link would silently start
    from an empty buffer while the real one is on a disk that is not mounted.
    """
    if create and not data_dir.exists() and not data_dir.is_symlink():
        try:
            data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
    if data_dir.exists() and not data_dir.is_dir():
        raise StoreError(f"data dir {data_dir} is not a directory")
    path = data_dir / DB_NAME
    if path.is_symlink() and not path.exists():
        raise StoreError(
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; "
            "refusing to start an empty buffer in its place (mount or restore the "
            "target, or remove the link to start empty)"
        )


def _lock(data_dir: Path) -> IO[bytes]:
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
    except OSError as exc:
        raise StoreError(f"data dir {data_dir} is not writable: {exc.strerror}") from None
    lock = os.fdopen(fd, "a+b")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreError(
            f"data dir {data_dir} is in use by another natsbridge process "
            "(only one process may write a buffer; stop it first)"
        ) from None
    return lock


def _values_sql(prefix: str, ncols: int, nrows: int, cache: dict[tuple[str, int], str]) -> str:
    key = (prefix, nrows)
    sql = cache.get(key)
    if sql is None:
        row = "(" + ",".join("?" * ncols) + ")"
        sql = cache[key] = prefix + ",".join([row] * nrows)
    return sql


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    """Split `total` rows into (start, count) chunks of power-of-two sizes <= _CHUNK.

    Power-of-two sizes keep the number of distinct SQL texts (and prepared statements)
    small; one statement per chunk keeps SQLite calls, and GIL hand-offs, few.
    """
    start = 0
    while start < total:
        n = min(total - start, _CHUNK)
        n = 1 << (n.bit_length() - 1)
        yield start, n
        start += n


@dataclass(slots=True)
class _Writes:
    """Writes buffered until the next flush (kept in application order by table)."""

    inserts: list[object]  # message rows, flattened: 7 values per row (one bind list)
    deletes: dict[int, list[int]]  # stream id -> seqs
    dedup_put: list[tuple[int, str, int, int]]
    redeliv_put: dict[tuple[int, int], int]
    redeliv_del: list[tuple[int, int]]

    @classmethod
    def empty(cls) -> _Writes:
        return cls([], {}, [], {}, [])


# ---------------------------------------------------------------------- the store


class Store:
    """Streams and consumers in one SQLite database; one thread at a time (see module doc)."""

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
        self._streams: dict[str, _Stream] = {}
        self._w = _Writes.empty()
        self._dirty_streams: dict[int, _Stream] = {}
        self._dirty_consumers: dict[int, _Consumer] = {}
        self._over_limits: dict[int, _Stream] = {}
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
    ) -> Store:
        """Open (or create) the store in `data_dir`.

        A writer takes the data dir's lock (StoreError if another process holds it).
        `read_only` opens an existing store without the lock, for operator views while
        a bridge runs. Raises StoreCorrupted for a damaged file, never recreating it.
        """
        data_dir = Path(data_dir)
        path = data_dir / DB_NAME
        lock: IO[bytes] | None = None
        _prepare_data_dir(data_dir, create=create and not read_only)
        if (read_only or not create) and not path.exists():
            raise NotFound(f"no buffer database in {data_dir} (expected {path})")
        if not read_only:
            lock = _lock(data_dir)
        try:
            if not path.exists():
                wal = Path(f"{path}-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise corrupted(
                        path,
                        f"the file is missing but its write-ahead log {wal.name} is not; "
                        "a new store beside it could replay that log",
                    )
                try:
                    _create_database(path)
                except (OSError, sqlite3.Error) as exc:
                    raise StoreError(f"cannot create buffer database {path}: {exc}") from None
            _check_header(path)
            conn = cls._connect(path, synchronous, read_only)
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

    @staticmethod
    def _connect(path: Path, synchronous: Synchronous, read_only: bool) -> sqlite3.Connection:
        mode = "rw"
        if read_only and os.statvfs(path).f_flag & os.ST_RDONLY:
            # A read-only mount: nothing can change the file, and SQLite could not create
            # the -shm a WAL reader needs. (A -wal left by a crash is not read then.)
            mode = "ro&immutable=1"
        try:
            conn = sqlite3.connect(
                f"file:{path}?mode={mode}", uri=True, isolation_level=None, cached_statements=256
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open buffer database {path}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if app_id != APPLICATION_ID:
                raise StoreError(
                    f"{path} is an SQLite database but not a natsbridge buffer "
                    f"(application_id {app_id:#x}); refusing to touch it"
                )
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path} has buffer schema version {version}; this natsbridge "
                    f"reads version {SCHEMA_VERSION}"
                )
            conn.execute(f"PRAGMA synchronous={Synchronous(synchronous).value}")
            conn.execute(f"PRAGMA cache_size=-{CACHE_SIZE_KIB}")
            conn.execute("PRAGMA temp_store=MEMORY")
            if read_only:
                conn.execute("PRAGMA query_only=ON")
            else:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StoreError(f"{path}: cannot use WAL journal mode (got {mode})")
                conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
                Store._check_size(conn, path)
            conn.create_function("subject_matches", 2, _sql_match, deterministic=True)
        except sqlite3.Error as exc:
            conn.close()
            if _is_corruption(exc):
                raise corrupted(path, str(exc)) from exc
            raise StoreError(f"cannot open buffer database {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check_size(conn: sqlite3.Connection, path: Path) -> None:
        """Detect a truncated file: after a full checkpoint the file holds every page."""
        busy, wal_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or wal_frames != done:
            return  # a reader holds the WAL; the size is not comparable now
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        actual = path.stat().st_size
        if actual < pages * page_size:
            raise corrupted(
                path, f"truncated: {actual} bytes on disk, {pages * page_size} expected"
            )

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

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ load

    def _load(self) -> None:
        conn = self._conn
        self._begin()
        if not self.read_only:  # stores made before the index existed
            conn.execute("CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (stream, ts)")
        by_id: dict[int, _Stream] = {}
        for sid, name, config, last_seq, msgs, size, created in conn.execute(
            "SELECT id, name, config, last_seq, msgs, bytes, created FROM streams"
        ):
            st = _Stream(sid, StreamConfig.from_json(config), last_seq, msgs, size)
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
            c = _Consumer(cid, owner, ConsumerConfig.from_json(config))
            c.delivered, c.ack_floor = delivered, floor
            c.redelivered, c.dead_lettered, c.created = redelivered, dead, created
            self._derive_pending(c)
            owner.consumers[name] = c

    def _derive_pending(self, c: _Consumer) -> None:
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
            f"SELECT seq, subject, {_SIZE} FROM messages WHERE stream=? AND seq>? AND seq<=? "
            "ORDER BY seq",
            (st.id, c.ack_floor, c.delivered),
        ):
            if seq in acked or (pattern is not None and match(pattern, subject) is None):
                continue
            c.pending[seq] = _Pending(counts.get(seq, 1), now, size)
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
            if _is_corruption(exc):
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
            for start, n in _chunks(len(flat) // 7):
                sql = _values_sql("INSERT INTO messages VALUES", 7, n, self._sql)
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
            for start, n in _chunks(len(rows)):
                sql = _values_sql("INSERT OR REPLACE INTO dedup VALUES", 4, n, self._sql)
                conn.execute(sql, [v for row in rows[start : start + n] for v in row])
            rows.clear()
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
        if w.redeliv_del:
            conn.executemany("DELETE FROM redeliveries WHERE consumer=? AND seq=?", w.redeliv_del)
            w.redeliv_del = []
        if w.redeliv_put:
            conn.executemany(
                "INSERT OR REPLACE INTO redeliveries VALUES (?,?,?)",
                [(cid, seq, n) for (cid, seq), n in w.redeliv_put.items()],
            )
            w.redeliv_put = {}
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
        for start, count in _chunks(len(scattered)):
            sql = self._sql.get(("del", count))
            if sql is None:
                sql = self._sql[("del", count)] = (
                    "DELETE FROM messages WHERE stream=? AND seq IN (" + ",".join("?" * count) + ")"
                )
            self._conn.execute(sql, [sid, *scattered[start : start + count]])

    def _mark(self, st: _Stream) -> None:
        if not st.dirty:
            st.dirty = True
            self._dirty_streams[st.id] = st

    def _mark_consumer(self, c: _Consumer) -> None:
        if not c.dirty:
            c.dirty = True
            self._dirty_consumers[c.id] = c

    # ------------------------------------------------------------------ limits

    def _over(self, st: _Stream) -> bool:
        cfg = st.config
        if cfg.discard is Discard.HOLD:  # over its limits by a batch, or lowered: kept
            return False
        return (0 < cfg.max_msgs < st.msgs) or (0 < cfg.max_bytes < st.bytes)

    def _enforce_limits(self, st: _Stream) -> None:
        """Delete the oldest messages until the stream is within max_msgs and max_bytes."""
        cfg = st.config
        while not st.deleted and self._over(st):
            excess_msgs = st.msgs - cfg.max_msgs if cfg.max_msgs else 0
            excess_bytes = st.bytes - cfg.max_bytes if cfg.max_bytes else 0
            rows = self._conn.execute(
                f"SELECT seq, {_SIZE} FROM messages WHERE stream=? ORDER BY seq LIMIT ?",
                (st.id, max(min(excess_msgs, 10 * _CHUNK), _CHUNK)),
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

    def _evict(self, st: _Stream, evicted: list[tuple[int, int]]) -> None:
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

    def _forget_deliveries(self, c: _Consumer, seq: int, p: _Pending) -> None:
        if p.deliveries >= 2:
            self._w.redeliv_put.pop((c.id, seq), None)
            self._w.redeliv_del.append((c.id, seq))

    # ------------------------------------------------------------------ streams

    def _stream(self, name: str) -> _Stream:
        st = self._streams.get(name)
        if st is None:
            raise NotFound(f"no stream {name!r}")
        return st

    def _consumer(self, stream: str, name: str) -> _Consumer:
        c = self._stream(stream).consumers.get(name)
        if c is None:
            raise NotFound(f"no consumer {name!r} on stream {stream!r}")
        return c

    def stream_names(self) -> list[str]:
        """Names of every stream, sorted."""
        return sorted(self._streams)

    def stream_configs(self) -> list[StreamConfig]:
        """Configs of every stream, sorted by name."""
        return [self._streams[n].config for n in sorted(self._streams)]

    def add_stream(self, config: StreamConfig) -> StreamInfo:
        """Create the stream, or update its config (retention cannot change).

        When `config.dead_letter` names a stream that does not exist, it is created
        with default limits (limits retention, no subjects).
        """
        self._check_writable()
        with self._guard():
            st = self._streams.get(config.name)
            if st is not None:
                if st.config.retention is not config.retention:
                    raise StoreError(
                        f"stream {config.name!r}: retention cannot change "
                        f"({st.config.retention.value} -> {config.retention.value})"
                    )
                if config.retention is Retention.WORKQUEUE and len(st.consumers) > 1:
                    raise StoreError(f"work-queue stream {config.name!r} has several consumers")
                if st.config != config:
                    self._flush()
                    self._begin()
                    self._conn.execute(
                        "UPDATE streams SET config=? WHERE id=?", (config.to_json(), st.id)
                    )
                    st.config = config
                    if self._over(st):
                        self._over_limits[st.id] = st
            else:
                self._flush()
                self._begin()
                created = self._clock.time_ns()
                cur = self._conn.execute(
                    "INSERT INTO streams (name, config, last_seq, msgs, bytes, created) "
                    "VALUES (?,?,0,0,0,?)",
                    (config.name, config.to_json(), created),
                )
                assert cur.lastrowid is not None
                st = _Stream(cur.lastrowid, config, 0, 0, 0)
                st.created = created
                self._streams[config.name] = st
            if config.dead_letter is not None and config.dead_letter not in self._streams:
                self.add_stream(StreamConfig(name=config.dead_letter))
            return self.stream_info(config.name)

    def delete_stream(self, name: str) -> None:
        """Delete a stream, its messages and its consumers."""
        self._check_writable()
        with self._guard():
            st = self._stream(name)
            self._flush()
            self._begin()
            for sql in (
                "DELETE FROM acks WHERE consumer IN (SELECT id FROM consumers WHERE stream=?)",
                "DELETE FROM redeliveries WHERE consumer IN "
                "(SELECT id FROM consumers WHERE stream=?)",
                "DELETE FROM consumers WHERE stream=?",
                "DELETE FROM dedup WHERE stream=?",
                "DELETE FROM messages WHERE stream=?",
                "DELETE FROM streams WHERE id=?",
            ):
                self._conn.execute(sql, (st.id,))
            st.deleted = True
            for c in st.consumers.values():
                c.deleted = True
            del self._streams[name]
            self._dedup_known.clear()  # stream ids can be reused

    def add_consumer(self, stream: str, config: ConsumerConfig) -> ConsumerInfo:
        """Create the durable consumer, or update its config."""
        self._check_writable()
        with self._guard():
            st = self._stream(stream)
            c = st.consumers.get(config.name)
            if c is None:
                if st.config.retention is Retention.WORKQUEUE and st.consumers:
                    raise StoreError(
                        f"work-queue stream {stream!r} already has consumer "
                        f"{next(iter(st.consumers))!r}: a work queue has one consumer"
                    )
                self._flush()
                self._begin()
                created = self._clock.time_ns()
                cur = self._conn.execute(
                    "INSERT INTO consumers (stream, name, config, delivered, ack_floor, "
                    "redelivered, dead_lettered, created) VALUES (?,?,?,0,0,0,0,?)",
                    (st.id, config.name, config.to_json(), created),
                )
                assert cur.lastrowid is not None
                c = _Consumer(cur.lastrowid, st, config)
                c.created = created
                st.consumers[config.name] = c
            elif c.config != config:
                self._flush()
                self._begin()
                self._conn.execute(
                    "UPDATE consumers SET config=? WHERE id=?", (config.to_json(), c.id)
                )
                c.config = config
            return self.consumer_info(stream, config.name)

    def delete_consumer(self, stream: str, name: str) -> None:
        """Delete a consumer and its state (its messages stay in the stream)."""
        self._check_writable()
        with self._guard():
            c = self._consumer(stream, name)
            self._flush()
            self._begin()
            for sql in (
                "DELETE FROM acks WHERE consumer=?",
                "DELETE FROM redeliveries WHERE consumer=?",
                "DELETE FROM consumers WHERE id=?",
            ):
                self._conn.execute(sql, (c.id,))
            c.deleted = True
            del c.stream.consumers[name]

    # ------------------------------------------------------------------ publish

    def _dedup_hit(self, st: _Stream, msg_id: str | None, now_ns: int) -> int | None:
        """The sequence `msg_id` was stored at within the duplicate window, or None."""
        if msg_id is None or not st.config.duplicate_window:
            return None
        key = (st.id, msg_id)
        try:
            hit = self._dedup_known[key]
        except KeyError:
            self._dedup_lookup(st, [msg_id])
            hit = self._dedup_known[key]
        if hit is None or hit[1] < now_ns - int(st.config.duplicate_window * 1e9):
            return None
        return hit[0]

    def _dedup_lookup(self, st: _Stream, msg_ids: Iterable[str | None]) -> None:
        """Load what the dedup table knows of `msg_ids` into the cache, in one query."""
        if not st.config.duplicate_window:
            return
        known = self._dedup_known
        wanted = list({m for m in msg_ids if m is not None and (st.id, m) not in known})
        if not wanted:
            return
        with self._guard():
            self._begin()
            for start, n in _chunks(len(wanted)):
                chunk = wanted[start : start + n]
                for msg_id in chunk:
                    known[(st.id, msg_id)] = None
                sql = self._sql.get(("dedup", n))
                if sql is None:
                    sql = self._sql[("dedup", n)] = (
                        "SELECT msg_id, seq, ts FROM dedup WHERE stream=? AND msg_id IN ("
                        + ",".join("?" * n)
                        + ")"
                    )
                for msg_id, seq, ts in self._conn.execute(sql, [st.id, *chunk]):
                    known[(st.id, msg_id)] = (seq, ts)

    def _check_message(self, st: _Stream, subject: str, payload: bytes) -> None:
        limit = st.config.max_msg_size
        if limit and len(payload) > limit:
            raise PayloadTooLarge(len(payload), limit)
        if not st.accepts(subject):
            raise SubjectError(
                f"subject {subject!r} matches none of stream {st.config.name!r}'s subjects "
                f"{list(st.config.subjects)}"
            )

    def _check_room(self, st: _Stream, count: int, size: int) -> None:
        cfg = st.config
        if cfg.discard is Discard.OLD:
            return
        if cfg.discard is Discard.HOLD:
            count = size = 1  # full once at a limit, whatever the batch
        if (cfg.max_msgs and st.msgs + count > cfg.max_msgs) or (
            cfg.max_bytes and st.bytes + size > cfg.max_bytes
        ):
            raise StreamFull(
                f"stream {cfg.name!r} is full ({st.msgs} messages, {st.bytes} bytes; "
                f"max_msgs {cfg.max_msgs or 'unlimited'}, max_bytes "
                f"{cfg.max_bytes or 'unlimited'}) and its discard policy is {cfg.discard.value!r}"
            )

    def _append(
        self,
        st: _Stream,
        subject: str,
        payload: bytes,
        headers: str | None,
        msg_id: str | None,
        now_ns: int,
        size: int = -1,
    ) -> int:
        """Append one checked message; returns its sequence."""
        if size < 0:
            size = _size(subject, headers, payload)
        seq = st.last_seq + 1
        st.last_seq = seq
        st.msgs += 1
        st.bytes += size
        self._w.inserts.extend((st.id, seq, now_ns, subject, msg_id, headers, payload))
        cfg = st.config
        if msg_id is not None and cfg.duplicate_window:
            self._dedup_known[(st.id, msg_id)] = (seq, now_ns)
            self._w.dedup_put.append((st.id, msg_id, seq, now_ns))
        if not st.dirty:
            st.dirty = True
            self._dirty_streams[st.id] = st
        self.appended.add(cfg.name)
        if (cfg.max_msgs and st.msgs > cfg.max_msgs) or (
            cfg.max_bytes and st.bytes > cfg.max_bytes
        ):
            self._over_limits[st.id] = st  # _enforce_limits keeps a HOLD stream as it is
        return seq

    def publish(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None = None,
        msg_id: str | None = None,
    ) -> PubAck:
        """Append a message to `stream` (durable at the next commit).

        A message id seen within the duplicate window returns the earlier sequence with
        `duplicate=True` and stores nothing. Raises NotFound, PayloadTooLarge,
        SubjectError (the stream has subjects and none matches) or StreamFull.
        """
        # The hot path of the broker: checks inlined, in the order of their likelihood.
        if self._failed is not None or self.read_only:
            self._check_writable()
        st = self._streams.get(stream)
        if st is None:
            raise NotFound(f"no stream {stream!r}")
        cfg = st.config
        now_ns = self._clock.time_ns()
        if msg_id is not None:
            dup = self._dedup_hit(st, msg_id, now_ns)
            if dup is not None:
                return PubAck(stream, dup, True)
        if (cfg.max_msg_size and len(payload) > cfg.max_msg_size) or cfg.subjects:
            self._check_message(st, subject, payload)
        hdr = encode_headers(headers) if headers else None
        size = len(payload) + len(subject) + (len(hdr) if hdr is not None else 0)
        if cfg.discard is not Discard.OLD:
            self._check_room(st, 1, size)
        return PubAck(stream, self._append(st, subject, payload, hdr, msg_id, now_ns, size))

    def publish_each(
        self, items: Sequence[tuple[str, str, bytes, Headers | None, str | None]]
    ) -> list[PubAck | BridgeError]:
        """publish() for each (stream, subject, payload, headers, msg_id), independently:
        each item gets its PubAck or its error, in order.

        The broker's path for many concurrent single publishes. The common case (no
        headers, no message id, a stream without subjects or size limits) is inlined.
        """
        if self._failed is not None or self.read_only:
            self._check_writable()
        out: list[PubAck | BridgeError] = []
        ids: dict[str, list[str]] = {}
        for item in items:
            if item[4] is not None:
                ids.setdefault(item[0], []).append(item[4])
        for stream, msg_ids in ids.items():  # one dedup query per stream, not per message
            if stream in self._streams:
                self._dedup_lookup(self._streams[stream], msg_ids)
        now_ns = self._clock.time_ns()
        inserts = self._w.inserts
        dedup_put = self._w.dedup_put
        known = self._dedup_known
        window = 0
        name: str | None = None
        fast: _Stream | None = None  # the current stream, when it needs no checks
        limit = 0
        marked = False
        for stream, subject, payload, headers, msg_id in items:
            if stream != name:
                name, marked = stream, False
                st = self._streams.get(stream)
                cfg = None if st is None else st.config
                fast = st if cfg and not (cfg.subjects or cfg.max_msgs or cfg.max_bytes) else None
                limit = cfg.max_msg_size if cfg else 0
                window = int(cfg.duplicate_window * 1e9) if cfg else 0
            if fast is not None and not headers and (not limit or len(payload) <= limit):
                if msg_id is not None and window:
                    hit = known.get((fast.id, msg_id))  # looked up above: absent means new
                    if hit is not None and hit[1] >= now_ns - window:
                        out.append(PubAck(stream, hit[0], True))
                        continue
                if not marked:
                    marked = True
                    self.appended.add(stream)
                    if not fast.dirty:
                        fast.dirty = True
                        self._dirty_streams[fast.id] = fast
                seq = fast.last_seq + 1
                fast.last_seq = seq
                fast.msgs += 1
                fast.bytes += len(payload) + len(subject)
                inserts.extend((fast.id, seq, now_ns, subject, msg_id, None, payload))
                if msg_id is not None and window:
                    known[(fast.id, msg_id)] = (seq, now_ns)
                    dedup_put.append((fast.id, msg_id, seq, now_ns))
                out.append(PubAck(stream, seq))
                continue
            try:
                out.append(self.publish(stream, subject, payload, headers, msg_id))
            except BridgeError as exc:
                out.append(exc)
            marked = False  # publish() may have flushed and cleared the dirty marks
        return out

    def publish_many(self, stream: str, messages: Sequence[Outgoing]) -> list[PubAck]:
        """Append `messages` in order, all or none (one error fails the whole batch)."""
        self._check_writable()
        st = self._stream(stream)
        now_ns = self._clock.time_ns()
        self._dedup_lookup(st, (m.msg_id for m in messages))
        plan: list[tuple[Outgoing, str | None] | int] = []  # (message, headers) or dup seq
        seen: dict[str, int] = {}
        count = size = 0
        for m in messages:
            dup = self._dedup_hit(st, m.msg_id, now_ns)
            if dup is None and m.msg_id is not None and m.msg_id in seen:
                dup = -seen[m.msg_id] - 1  # the position of its first occurrence, encoded
            if dup is not None:
                plan.append(dup)
                continue
            self._check_message(st, m.subject, m.payload)
            hdr = encode_headers(m.headers)
            if m.msg_id is not None and st.config.duplicate_window:
                seen[m.msg_id] = len(plan)
            plan.append((m, hdr))
            count += 1
            size += _size(m.subject, hdr, m.payload)
        self._check_room(st, count, size)
        acks: list[PubAck] = []
        for item in plan:
            if isinstance(item, int):
                seq = acks[-item - 1].seq if item < 0 else item
                acks.append(PubAck(stream, seq, True))
            else:
                m, hdr = item
                seq = self._append(st, m.subject, m.payload, hdr, m.msg_id, now_ns)
                acks.append(PubAck(stream, seq))
        return acks

    def dead_letter(
        self,
        stream: str,
        subject: str,
        payload: bytes,
        headers: Headers | None,
        reason: str,
    ) -> PubAck:
        """Write a message that never reached `stream` to `stream`'s dead-letter stream.

        The dead letter carries `reason` in Bridge-Reason and `stream` in
        Bridge-Dead-Letter-Stream. Raises StoreError when `stream` has no dead-letter
        stream configured.
        """
        self._check_writable()
        st = self._stream(stream)
        dlq = self._dead_letter_stream(st)
        if dlq is None:
            raise StoreError(f"stream {stream!r} has no dead-letter stream")
        marked = dict(headers or {})
        marked[BRIDGE_REASON] = [reason]
        marked[BRIDGE_DEAD_LETTER_STREAM] = [stream]
        now_ns = self._clock.time_ns()
        return PubAck(
            dlq.config.name,
            self._append(dlq, subject, payload, encode_headers(marked), None, now_ns),
        )

    def _dead_letter_stream(self, st: _Stream) -> _Stream | None:
        name = st.config.dead_letter
        if name is None:
            return None
        dlq = self._streams.get(name)
        if dlq is None:  # deleted since: recreate rather than lose the message
            self.add_stream(StreamConfig(name=name))
            dlq = self._streams[name]
        return dlq

    # ------------------------------------------------------------------ consume

    def fetch(self, stream: str, consumer: str, batch: int) -> FetchResult:
        """Deliver up to `batch` messages: due redeliveries first, then new ones in order."""
        self._check_writable()
        return self.fetch_from(self._consumer(stream, consumer), batch)

    def consumer_handle(self, stream: str, consumer: str) -> object:
        """An opaque handle for the fast ack path (`ack_handle` …); NotFound if absent."""
        return self._consumer(stream, consumer)

    def fetch_from(self, c: object, batch: int) -> FetchResult:
        """fetch() on a handle from consumer_handle()."""
        assert isinstance(c, _Consumer)
        if c.deleted:
            raise NotFound(f"consumer {c.config.name!r} was deleted")
        self._check_writable()
        with self._guard():
            return self._fetch(c, max(batch, 1))

    def _fetch(self, c: _Consumer, batch: int) -> FetchResult:
        cfg = c.config
        st = c.stream
        now = self._clock.monotonic()
        self._flush()  # evictions buffered so far apply before pending messages are chosen
        self._begin()
        due: list[tuple[int, _Pending]] = []
        timers = c.timers
        while timers and timers[0][0] <= now and len(due) < batch:
            deadline, seq = heapq.heappop(timers)
            p = c.pending.get(seq)
            if p is None or p.deadline != deadline:
                continue
            if cfg.max_deliver and p.deliveries >= cfg.max_deliver:
                self._dead_letter_pending(c, seq, "max_deliver")
                continue
            p.deadline = -1.0  # taken: a stale heap entry with the same deadline is now void
            due.append((seq, p))
        out: list[DeliveryRow] = []
        self._flush()
        self._begin()
        if due:
            rows = self._read_seqs(st.id, [seq for seq, _ in due])
            for seq, p in due:
                row = rows.get(seq)
                if row is None:  # removed by limits meanwhile
                    c.pending.pop(seq, None)
                    self._forget_deliveries(c, seq, p)
                    self._mark_consumer(c)
                    continue
                p.deliveries += 1
                p.deadline = now + cfg.wait_after(p.deliveries)
                c.schedule(seq, p)
                self._w.redeliv_put[(c.id, seq)] = p.deliveries
                c.redelivered += 1
                self._mark_consumer(c)
                out.append((*row, p.deliveries))
        room = batch - len(out)
        limit = cfg.in_flight_limit
        if limit:
            room = min(room, limit - len(c.pending))  # redelivered ones are still pending
        if room > 0 and c.delivered < st.last_seq:
            # The constant 1 is the delivery count: rows come back as DeliveryRow as they are.
            if cfg.filter_subject is None:
                cur = self._conn.execute(
                    f"SELECT {_ROW}, 1 FROM messages WHERE stream=? AND seq>? ORDER BY seq LIMIT ?",
                    (st.id, c.delivered, room),
                )
            else:
                cur = self._conn.execute(
                    f"SELECT {_ROW}, 1 FROM messages WHERE stream=? AND seq>? "
                    "AND subject_matches(?, subject) ORDER BY seq LIMIT ?",
                    (st.id, c.delivered, cfg.filter_subject, room),
                )
            rows_new: list[DeliveryRow] = cur.fetchall()
            deadline = now + cfg.wait_after(1)
            pending = c.pending
            timers = c.timers
            push = heapq.heappush
            for new in rows_new:
                seq = new[0]
                headers = new[4]
                pending[seq] = _Pending(
                    1,
                    deadline,
                    len(new[5]) + len(new[2]) + (len(headers) if headers is not None else 0),
                )
                push(timers, (deadline, seq))
            out.extend(rows_new)
            c.compact()
            if len(rows_new) < room:
                c.delivered = st.last_seq  # nothing (matching) left: skip past the rest
            else:
                c.delivered = rows_new[-1][0]
            self._mark_consumer(c)
        wake_at = c.timers[0][0] if c.timers else None
        return FetchResult(out, wake_at)

    def _read_seqs(
        self, sid: int, seqs: list[int]
    ) -> dict[int, tuple[int, int, str, str | None, str | None, bytes]]:
        found: dict[int, tuple[int, int, str, str | None, str | None, bytes]] = {}
        for start, n in _chunks(len(seqs)):
            sql = self._sql.get(("read", n))
            if sql is None:
                sql = self._sql[("read", n)] = (
                    f"SELECT {_ROW} FROM messages WHERE stream=? AND seq IN ("
                    + ",".join("?" * n)
                    + ")"
                )
            for row in self._conn.execute(sql, [sid, *seqs[start : start + n]]):
                found[row[0]] = row
        return found

    def _settle(self, c: _Consumer, seq: int, p: _Pending) -> None:
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

    def ack(self, stream: str, consumer: str, seq: int) -> None:
        """Acknowledge a delivered message: it is never delivered again once committed."""
        self.ack_handle(self._consumer(stream, consumer), seq)

    def ack_handle(self, c: object, seq: int) -> None:
        """ack() on a handle from consumer_handle(); unknown or settled seqs are ignored."""
        assert isinstance(c, _Consumer)
        if self._streams.get(c.stream.config.name) is not c.stream:
            c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        if self._failed is not None:
            self._check_writable()
        del c.pending[seq]
        st = c.stream
        if st.config.retention is Retention.WORKQUEUE and p.deliveries == 1:
            # The hot path: a work-queue ack deletes the row; inlined _settle.
            seqs = self._w.deletes.get(st.id)
            if seqs is None:
                seqs = self._w.deletes[st.id] = []
            seqs.append(seq)
            st.msgs -= 1
            st.bytes -= p.size
            if not st.dirty:
                st.dirty = True
                self._dirty_streams[st.id] = st
            if not c.dirty:
                c.dirty = True
                self._dirty_consumers[c.id] = c
        else:
            self._settle(c, seq, p)

    def _adopt(self, c: _Consumer) -> _Consumer:
        """The consumer a handle names in this store: a handle outlives an in-process reopen
        (bridge.broker.broker), and then names the same consumer of the reopened store."""
        st = self._streams.get(c.stream.config.name)
        if st is c.stream or c.deleted or st is None:
            return c  # a deleted consumer's handle is a no-op, as before
        return st.consumers.get(c.config.name, c)

    def keep_deliveries(self, old: Store) -> None:
        """After reopening in process: messages `old` handed out keep their ack deadline.

        Opening makes every unacked delivery due at once, right for a restart (nobody
        holds them any more) but not here: their receivers still do and would get a
        second copy while the first is in flight.
        """
        now = self._clock.monotonic()
        for name, st in self._streams.items():
            before = old._streams.get(name)
            for c in st.consumers.values():
                was = None if before is None else before.consumers.get(c.config.name)
                if was is None:
                    continue
                for seq, p in c.pending.items():
                    q = was.pending.get(seq)
                    if q is not None and q.deadline > now:
                        p.deadline = q.deadline
                c.timers = [(p.deadline, seq) for seq, p in c.pending.items()]
                heapq.heapify(c.timers)

    def nak(self, stream: str, consumer: str, seq: int, delay: float | None = None) -> None:
        """Ask for redelivery after `delay` seconds (default: at once)."""
        self.nak_handle(self._consumer(stream, consumer), seq, delay)

    def nak_handle(self, c: object, seq: int, delay: float | None = None) -> None:
        """nak() on a handle from consumer_handle()."""
        assert isinstance(c, _Consumer)
        c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        self._check_writable()
        if c.config.max_deliver and p.deliveries >= c.config.max_deliver:
            with self._guard():
                self._dead_letter_pending(c, seq, "max_deliver")
            return
        p.deadline = self._clock.monotonic() + max(delay or 0.0, 0.0)
        c.schedule(seq, p)

    def in_progress(self, stream: str, consumer: str, seq: int) -> None:
        """Restart the ack wait of a delivered message that is still being worked on."""
        self.in_progress_handle(self._consumer(stream, consumer), seq)

    def in_progress_handle(self, c: object, seq: int) -> None:
        """in_progress() on a handle from consumer_handle()."""
        assert isinstance(c, _Consumer)
        c = self._adopt(c)
        p = c.pending.get(seq)
        if p is None or c.deleted:
            return
        p.deadline = self._clock.monotonic() + c.config.wait_after(p.deliveries)
        c.schedule(seq, p)

    def term(self, stream: str, consumer: str, seq: int, reason: str = "terminated") -> None:
        """Give up on a delivered message: it goes to the dead-letter stream with `reason`."""
        self.term_handle(self._consumer(stream, consumer), seq, reason)

    def term_handle(self, c: object, seq: int, reason: str = "terminated") -> None:
        """term() on a handle from consumer_handle()."""
        assert isinstance(c, _Consumer)
        c = self._adopt(c)
        if seq not in c.pending or c.deleted:
            return
        self._check_writable()
        with self._guard():
            self._dead_letter_pending(c, seq, reason)

    def _dead_letter_pending(self, c: _Consumer, seq: int, reason: str) -> None:
        """Move pending message `seq` of `c` to the dead-letter stream and settle it."""
        self._flush()  # a buffered eviction may remove it first
        self._begin()
        p = c.pending.pop(seq, None)
        if p is None:
            return
        st = c.stream
        dlq = self._dead_letter_stream(st)
        if dlq is not None:
            row = self._conn.execute(
                "SELECT subject, msg_id, headers, payload FROM messages WHERE stream=? AND seq=?",
                (st.id, seq),
            ).fetchone()
            if row is not None:
                subject, msg_id, headers, payload = row
                marked = decode_headers(headers)
                marked[BRIDGE_REASON] = [reason]
                marked[BRIDGE_DEAD_LETTER_STREAM] = [st.config.name]
                marked[BRIDGE_DEAD_LETTER_SEQ] = [str(seq)]
                marked[BRIDGE_DELIVERIES] = [str(p.deliveries)]
                self._append(
                    dlq, subject, payload, encode_headers(marked), msg_id, self._clock.time_ns()
                )
        else:
            log.warning(
                "stream %r has no dead-letter stream: dropping seq %d (%s)",
                st.config.name,
                seq,
                reason,
            )
        c.dead_lettered += 1
        self._settle(c, seq, p)

    # ------------------------------------------------------------------ reading and admin

    def get_message(self, stream: str, seq: int) -> StoredMessage | None:
        """The stored message `seq` of `stream`, or None."""
        msgs = self.messages(stream, seq, 1)
        return msgs[0] if msgs and msgs[0].seq == seq else None

    def messages(self, stream: str, start_seq: int = 1, limit: int = 100) -> list[StoredMessage]:
        """Up to `limit` stored messages of `stream` from `start_seq` on, in order."""
        st = self._stream(stream)
        with self._guard():
            self._flush()
            self._begin()
            rows = self._conn.execute(
                f"SELECT {_ROW} FROM messages WHERE stream=? AND seq>=? ORDER BY seq LIMIT ?",
                (st.id, start_seq, limit),
            ).fetchall()
        return [
            StoredMessage(stream, seq, subject, payload, decode_headers(hdr), msg_id, ts / 1e9)
            for seq, ts, subject, msg_id, hdr, payload in rows
        ]

    def delete_message(self, stream: str, seq: int) -> bool:
        """Remove one message (from every consumer too); False when it was not stored."""
        self._check_writable()
        st = self._stream(stream)
        with self._guard():
            self._flush()
            self._begin()
            row = self._conn.execute(
                f"DELETE FROM messages WHERE stream=? AND seq=? RETURNING {_SIZE}", (st.id, seq)
            ).fetchone()
            if row is None:
                return False
            st.msgs -= 1
            st.bytes -= row[0]
            self._mark(st)
            for c in st.consumers.values():
                p = c.pending.pop(seq, None)
                if p is not None:
                    self._forget_deliveries(c, seq, p)
                    self._mark_consumer(c)
            return True

    def replay(self, dead_letters: str, seqs: Iterable[int] | None = None) -> list[PubAck]:
        """Move dead letters back to the stream they came from (Bridge-Dead-Letter-Stream).

        Only messages that were in a stream (they carry Bridge-Dead-Letter-Seq) are moved;
        the dead-letter headers are removed. Returns the new positions, in order. The
        replayed message gets a new sequence and is not checked against the dedup window
        (it would match itself).
        """
        self._check_writable()
        dlq = self._stream(dead_letters)
        wanted = None if seqs is None else set(seqs)
        moved: list[PubAck] = []
        start = 1
        while True:
            batch = self.messages(dead_letters, start, _CHUNK)
            if not batch:
                break
            start = batch[-1].seq + 1
            for m in batch:
                if wanted is not None and m.seq not in wanted:
                    continue
                origin = m.headers.get(BRIDGE_DEAD_LETTER_STREAM, [None])[0]
                if origin is None or BRIDGE_DEAD_LETTER_SEQ not in m.headers:
                    continue
                target = self._stream(origin)
                headers = {k: v for k, v in m.headers.items() if k not in DEAD_LETTER_HEADERS}
                hdr = encode_headers(headers)
                self._check_room(target, 1, _size(m.subject, hdr, m.payload))
                seq = self._append(
                    target, m.subject, m.payload, hdr, m.msg_id, self._clock.time_ns()
                )
                self.delete_message(dlq.config.name, m.seq)
                moved.append(PubAck(origin, seq))
        return moved

    # ------------------------------------------------------------------ info

    def _oldest(self, sid: int, after: int, pattern: str | None) -> tuple[int, int] | None:
        if pattern is None:
            row = self._conn.execute(
                "SELECT seq, ts FROM messages WHERE stream=? AND seq>? ORDER BY seq LIMIT 1",
                (sid, after),
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT seq, ts FROM messages WHERE stream=? AND seq>? "
                "AND subject_matches(?, subject) ORDER BY seq LIMIT 1",
                (sid, after, pattern),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def stream_info(self, name: str) -> StreamInfo:
        """Counters, sequences and consumers of one stream."""
        st = self._stream(name)
        with self._guard():
            self._flush()
            self._begin()
            now_ns = self._clock.time_ns()
            first = self._oldest(st.id, 0, None)
            return StreamInfo(
                config=st.config,
                messages=st.msgs,
                bytes=st.bytes,
                first_seq=first[0] if first else st.last_seq + 1,
                last_seq=st.last_seq,
                oldest_age=max(now_ns - first[1], 0) / 1e9 if first else None,
                created=st.created / 1e9,
                consumers=tuple(self._consumer_info(c, now_ns) for c in st.consumers.values()),
            )

    def streams(self) -> list[StreamInfo]:
        """stream_info of every stream, sorted by name."""
        return [self.stream_info(name) for name in self.stream_names()]

    def consumer_info(self, stream: str, name: str) -> ConsumerInfo:
        """Position and counters of one consumer."""
        c = self._consumer(stream, name)
        with self._guard():
            self._flush()
            self._begin()
            return self._consumer_info(c, self._clock.time_ns())

    def _consumer_info(self, c: _Consumer, now_ns: int) -> ConsumerInfo:
        st = c.stream
        pattern = c.config.filter_subject
        if st.config.retention is Retention.WORKQUEUE and pattern is None:
            num_pending = st.msgs - len(c.pending)
        elif pattern is None:
            num_pending = self._conn.execute(
                "SELECT count(*) FROM messages WHERE stream=? AND seq>?", (st.id, c.delivered)
            ).fetchone()[0]
        else:
            num_pending = self._conn.execute(
                "SELECT count(*) FROM messages WHERE stream=? AND seq>? "
                "AND subject_matches(?, subject)",
                (st.id, c.delivered, pattern),
            ).fetchone()[0]
        oldest_ts: int | None = None
        if c.pending:
            row = self._conn.execute(
                "SELECT ts FROM messages WHERE stream=? AND seq=?", (st.id, min(c.pending))
            ).fetchone()
            oldest_ts = None if row is None else row[0]
        if oldest_ts is None:
            first = self._oldest(st.id, c.delivered, pattern)
            oldest_ts = None if first is None else first[1]
        return ConsumerInfo(
            stream=st.config.name,
            name=c.config.name,
            config=c.config,
            delivered=c.delivered,
            ack_floor=(min(c.pending) - 1) if c.pending else c.delivered,
            num_pending=num_pending,
            num_ack_pending=len(c.pending),
            num_redelivered=c.redelivered,
            num_dead_lettered=c.dead_lettered,
            oldest_age=None if oldest_ts is None else max(now_ns - oldest_ts, 0) / 1e9,
            created=c.created / 1e9,
        )

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

    def _prune_dedup(self, st: _Stream, now_ns: int) -> None:
        cutoff = now_ns - int(st.config.duplicate_window * 1e9)
        self._flush()
        self._begin()
        self._conn.execute("DELETE FROM dedup WHERE stream=? AND ts<?", (st.id, cutoff))

    def _expire(self, st: _Stream, cutoff_ns: int) -> None:
        self._flush()
        self._begin()
        while True:
            rows = self._conn.execute(
                f"SELECT seq, ts, {_SIZE} FROM messages WHERE stream=? ORDER BY seq LIMIT ?",
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
                    f"SELECT count(*), coalesce(sum({_SIZE}), 0), max(seq) FROM messages "
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


def _sql_match(pattern: str, subject: str) -> int:
    return 1 if match(pattern, subject) is not None else 0
