"""The parity ledger: what a parity tap saw of a destructive legacy queue, kept on disk.

A RabbitMQ queue gives each message to one consumer and forgets it, so parity cannot read
the legacy side afterwards as it reads a Kafka topic. Instead, while a migration is in
verify, a tap queue of the bridge's own (bridge.migrate.amqp_side) receives a copy of
every message the legacy consumers get, and each `migrate verify` moves what the tap holds
into this ledger: one row per message with its coordinates (exchange, routing key,
message id), its content digest and the time it was recorded, committed before the tap's
messages are acked (so a crash in between records a message twice, never zero times).

File: ``<data_dir>/migrations/ledger/<migration>.db`` (SQLite, synchronous=FULL), created
0600. `started` is when the tap was opened: the NATS side older than that has no
counterpart here. Dropped when the tap is closed (the migration leaves verify).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded REAL NOT NULL,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT,
    digest TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One message the tap saw."""

    id: int
    recorded: float
    exchange: str
    routing_key: str
    message_id: str | None
    digest: str


def ledger_path(data_dir: str | Path, migration: str) -> Path:
    """Where the ledger of `migration` lives."""
    return Path(data_dir) / "migrations" / "ledger" / f"{migration}.db"


class Ledger:
    """One migration's ledger file; open with `Ledger.open`, close with `close()`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(cls, data_dir: str | Path, migration: str) -> Ledger:
        """Open (or create) the ledger of `migration` under `data_dir`."""
        path = ledger_path(data_dir, migration)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )  # used by one thread at a time
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        return cls(db, path)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._db.close()

    @property
    def started(self) -> float | None:
        """When the tap was opened (epoch seconds), or None before."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'started'").fetchone()
        return float(row[0]) if row else None

    def start(self, at: float | None = None) -> float:
        """Record when the tap was opened, once; returns that time."""
        now = time.time() if at is None else at
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('started', ?)", (repr(now),))
        started = self.started
        assert started is not None
        return started

    def append(self, rows: Iterable[tuple[str, str, str | None, str]]) -> int:
        """Commit (exchange, routing key, message id, digest) rows durably; returns how many."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.executemany(
                "INSERT INTO entries (recorded, exchange, routing_key, message_id, digest)"
                " VALUES (?, ?, ?, ?, ?)",
                ((now, *row) for row in rows),
            )
        return cursor.rowcount

    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        rows = self._db.execute(
            "SELECT id, recorded, exchange, routing_key, message_id, digest"
            " FROM entries ORDER BY id"
        )
        return [Entry(*row) for row in rows]


def drop(data_dir: str | Path, migration: str) -> None:
    """Delete the ledger of `migration` (and its WAL files) if it exists."""
    path = ledger_path(data_dir, migration)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
