"""The buffer's file: its SQLite schema, the stored header format, and how the file is
created, checked, locked and opened (bridge.broker.store is the Store over it).

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
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from natsbridge.bridge.broker.config import Synchronous
from natsbridge.bridge.envelope import Headers
from natsbridge.bridge.errors import StoreCorrupted, StoreError
from natsbridge.mappings.subjects import match

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

CHUNK = 512  # rows per multi-row INSERT / IN list (binds stay under SQLite's 32766)

SCHEMA_SQL = """
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

ROW_SQL = "seq, ts, subject, msg_id, headers, payload"
SIZE_SQL = "length(payload) + length(subject) + coalesce(length(headers), 0)"

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


def stored_size(subject: str, headers: str | None, payload: bytes) -> int:
    # Same measure as the SQL expression SIZE_SQL (length() counts characters of TEXT).
    return len(payload) + len(subject) + (len(headers) if headers is not None else 0)


# ---------------------------------------------------------------------- errors and files


_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def is_corruption(exc: sqlite3.Error) -> bool:
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


def create_database(path: Path) -> None:
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
        conn.executescript(f"BEGIN;{SCHEMA_SQL}COMMIT;")
        conn.execute("PRAGMA journal_mode=WAL")  # recorded in the file header
    finally:
        conn.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def create_missing(path: Path) -> None:
    """Create the store at `path` unless it exists; never beside a left-over write-ahead log."""
    if path.exists():
        return
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise corrupted(
            path,
            f"the file is missing but its write-ahead log {wal.name} is not; "
            "a new store beside it could replay that log",
        )
    try:
        create_database(path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot create buffer database {path}: {exc}") from None


def check_header(path: Path) -> None:
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


def prepare_data_dir(data_dir: Path, create: bool) -> None:
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


def lock_data_dir(data_dir: Path) -> IO[bytes]:
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


def values_sql(prefix: str, ncols: int, nrows: int, cache: dict[tuple[str, int], str]) -> str:
    key = (prefix, nrows)
    sql = cache.get(key)
    if sql is None:
        row = "(" + ",".join("?" * ncols) + ")"
        sql = cache[key] = prefix + ",".join([row] * nrows)
    return sql


def chunks(total: int) -> Iterator[tuple[int, int]]:
    """Split `total` rows into (start, count) chunks of power-of-two sizes <= CHUNK.

    Power-of-two sizes keep the number of distinct SQL texts (and prepared statements)
    small; one statement per chunk keeps SQLite calls, and GIL hand-offs, few.
    """
    start = 0
    while start < total:
        n = min(total - start, CHUNK)
        n = 1 << (n.bit_length() - 1)
        yield start, n
        start += n


def connect(path: Path, synchronous: Synchronous, read_only: bool) -> sqlite3.Connection:
    """Open the checked file `path` and set it up (StoreError when it is not ours)."""
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
            _check_size(conn, path)
        conn.create_function("subject_matches", 2, sql_match, deterministic=True)
    except sqlite3.Error as exc:
        conn.close()
        if is_corruption(exc):
            raise corrupted(path, str(exc)) from exc
        raise StoreError(f"cannot open buffer database {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _check_size(conn: sqlite3.Connection, path: Path) -> None:
    """Detect a truncated file: after a full checkpoint the file holds every page."""
    busy, wal_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy or wal_frames != done:
        return  # a reader holds the WAL; the size is not comparable now
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    actual = path.stat().st_size
    if actual < pages * page_size:
        raise corrupted(path, f"truncated: {actual} bytes on disk, {pages * page_size} expected")


def sql_match(pattern: str, subject: str) -> int:
    """1 when `subject` matches `pattern` (the SQL function subject_matches)."""
    return 1 if match(pattern, subject) is not None else 0
