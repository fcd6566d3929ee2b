"""Fixtures for the embedded broker's tests: a fake clock and stores opened on it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from natsbridge.bridge.broker.config import ConsumerConfig, Retention, StreamConfig
from natsbridge.bridge.broker.store import Store


class FakeClock:
    """Wall and monotonic time that only move when told to."""

    def __init__(self) -> None:
        self.wall_ns = 1_700_000_000 * 10**9
        self.mono = 1000.0

    def time_ns(self) -> int:
        return self.wall_ns

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall_ns += int(seconds * 1e9)
        self.mono += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenStore = Callable[[], Store]


@pytest.fixture
def open_store(tmp_path: Path, clock: FakeClock) -> Iterator[OpenStore]:
    """Opens the store of `tmp_path` on the fake clock; closes whatever is still open."""
    opened: list[Store] = []

    def open_() -> Store:
        store = Store.open(tmp_path, clock=clock)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()


def work_queue(
    store: Store,
    name: str = "orders",
    consumer: ConsumerConfig | None = None,
    **limits: object,
) -> None:
    """A work-queue stream with a dead-letter stream and one consumer, committed."""
    store.add_stream(
        StreamConfig(
            name=name,
            retention=Retention.WORKQUEUE,
            dead_letter=f"{name}.dlq",
            **limits,  # type: ignore[arg-type]
        )
    )
    store.add_consumer(name, consumer or ConsumerConfig(name="deliver"))
    store.commit()


def crash(store: Store) -> None:
    """Drop the store as kill -9 would: nothing uncommitted reaches the file."""
    store._conn.close()
    if store._lock is not None:
        store._lock.close()
        store._lock = None
