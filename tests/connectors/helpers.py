"""Small helpers the connector tests share: a loop per test, unique names, receiving."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from natsbridge.bridge.connector import Incoming, Source

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion in a fresh event loop (tests are plain functions)."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


def unique(prefix: str) -> str:
    """`prefix` plus a random suffix: a name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def receive_n(source: Source, count: int, timeout: float = 20.0) -> list[Incoming]:
    """Exactly `count` messages from `source` (fails the test on timeout)."""
    received: list[Incoming] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(received) < count:
        remaining = deadline - loop.time()
        assert remaining > 0, f"received {len(received)} of {count} messages"
        received.extend(await source.receive(count - len(received), min(remaining, 1.0)))
    return received


async def receive_nothing(source: Source, wait: float = 1.0) -> None:
    """Assert that `source` delivers nothing within `wait` seconds."""
    extra = await source.receive(10, wait)
    assert not extra, f"unexpected messages: {[m.envelope.payload for m in extra]}"


async def take_shared(
    replicas: Sequence[Source], count: int, batch: int = 100
) -> list[list[bytes]]:
    """`count` messages from `replicas` read in turn (each acked): the payloads each took.

    Then asserts that none of them has anything more: a message taken twice shows up as
    a duplicate payload, one taken by nobody as a missing one.
    """
    taken: list[list[bytes]] = [[] for _ in replicas]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while sum(map(len, taken)) < count and loop.time() < deadline:
        for replica, got in zip(replicas, taken, strict=True):
            for message in await replica.receive(batch, 0.1):
                message.ack(None)
                got.append(message.envelope.payload)
    for replica in replicas:
        await receive_nothing(replica, 0.5)
    return taken
