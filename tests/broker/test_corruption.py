"""A damaged buffer file is reported with StoreCorrupted and never emptied or recreated."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from natsbridge.bridge.broker.broker import Broker
from natsbridge.bridge.broker.config import ConsumerConfig, Outgoing, Retention, StreamConfig
from natsbridge.bridge.broker.store import DB_NAME, Store
from natsbridge.bridge.errors import StoreCorrupted


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled(data_dir: Path, messages: int = 4000) -> Path:
    """A cleanly closed store holding `messages` messages of 1 KiB; returns the file."""
    store = Store.open(data_dir)
    store.add_stream(StreamConfig(name="orders", retention=Retention.WORKQUEUE))
    store.add_consumer("orders", ConsumerConfig(name="deliver"))
    store.publish_many("orders", [Outgoing("orders.new", os.urandom(1024))] * messages)
    store.close()
    path = data_dir / DB_NAME
    assert path.stat().st_size > messages * 1024
    assert not os.path.exists(f"{path}-wal") or os.path.getsize(f"{path}-wal") == 0
    return path


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"")
    with pytest.raises(StoreCorrupted, match="the file is empty"):
        Store.open(tmp_path)
    assert (tmp_path / DB_NAME).read_bytes() == b""


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"hello, I am not SQLite" * 100)
    with pytest.raises(StoreCorrupted, match="not an SQLite database"):
        Store.open(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    path = filled(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    before = digest(path)
    with pytest.raises(StoreCorrupted, match="truncated") as info:
        Store.open(tmp_path)
    message = str(info.value)
    assert str(path) in message and "left untouched" in message and "--check" in message
    assert digest(path) == before
    with pytest.raises(StoreCorrupted):
        asyncio.run(Broker.open(tmp_path))
    assert digest(path) == before


def test_overwritten_pages_are_reported_on_read(tmp_path: Path) -> None:
    path = filled(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # garbage over 16 pages in the middle of the messages
        f.seek(size // 2 // 8192 * 8192)
        f.write(b"\xa5" * 16 * 8192)
    before = digest(path)
    try:
        store = Store.open(tmp_path)
    except StoreCorrupted:
        pass  # found on open: just as good
    else:
        with pytest.raises(StoreCorrupted, match="malformed"):
            while store.fetch("orders", "deliver", 1000).messages:
                pass
        with pytest.raises(StoreCorrupted):  # the store stays failed
            store.fetch("orders", "deliver", 1)
        store.close()
    assert digest(path) == before
    reader = Store.open(tmp_path, read_only=True)
    try:
        assert reader.integrity_check()  # problems listed
    finally:
        reader.close()


def test_damaged_header_page(tmp_path: Path) -> None:
    path = filled(tmp_path, messages=200)
    with open(path, "r+b") as f:  # keep the magic string, wreck the rest of page 1
        f.seek(100)
        f.write(b"\xff" * 4000)
    with pytest.raises(StoreCorrupted):
        Store.open(tmp_path)


def test_missing_file_with_a_leftover_wal(tmp_path: Path) -> None:
    (tmp_path / f"{DB_NAME}-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 60)
    with pytest.raises(StoreCorrupted, match="write-ahead log"):
        Store.open(tmp_path)
    assert not (tmp_path / DB_NAME).exists()
