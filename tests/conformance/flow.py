"""What the runtime does around a source or a sink, reduced to what the definitions need."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from natsbridge.bridge.connector import Incoming, Sink, Source
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost, PermanentError, RetryableError


def needs(missing: str | None) -> None:
    """Skip the test, saying why, when the harness declares a capability missing."""
    if missing is not None:
        pytest.skip(missing)


async def receive_n(source: Source, count: int, timeout: float = 30.0) -> list[Incoming]:
    """Exactly `count` messages (fails on timeout)."""
    return await receive_until(source, lambda got: len(got) >= count, timeout, f"{count} messages")


async def receive_until(
    source: Source,
    done: Callable[[list[Incoming]], bool],
    timeout: float,
    what: str,
    lost: list[ConnectionLost] | None = None,
) -> list[Incoming]:
    """Receive until `done(received)`. With a `lost` list, a ConnectionLost is appended to it
    and the source reconnected as the runtime does (close, connect); else it fails the test."""
    received: list[Incoming] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(received):
        left = deadline - loop.time()
        assert left > 0, f"timed out waiting for {what}: got {payloads_of(received)}"
        try:
            received.extend(await source.receive(100, min(left, 0.5)))
        except ConnectionLost as exc:
            if lost is None:
                raise
            lost.append(exc)
            await source.close()
            await connect_retrying(source, deadline)
    return received


async def receive_for(source: Source, seconds: float, lost: list[ConnectionLost]) -> list[Incoming]:
    """Everything received in `seconds`, reconnecting after ConnectionLost (see receive_until)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    return await receive_until(source, lambda _: loop.time() >= deadline, seconds + 30, "", lost)


async def receive_quiet(source: Source, quiet: float = 1.5) -> list[Incoming]:
    """Everything that arrives until `quiet` seconds pass without a message."""
    received: list[Incoming] = []
    while batch := await source.receive(100, quiet):
        received.extend(batch)
    return received


async def connect_retrying(endpoint: Source | Sink, deadline: float) -> None:
    """connect(), retried on RetryableError until `deadline` (loop time)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await endpoint.connect()
            return
        except RetryableError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def send_until_confirmed(sink: Sink, envelopes: Sequence[Envelope], timeout: float) -> int:
    """Send until every envelope is confirmed, resending what failed with a RetryableError and
    reconnecting after ConnectionLost, as the runtime does; how many sends failed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiting = list(envelopes)
    failures = 0
    while waiting:
        assert loop.time() < deadline, f"not confirmed: {[e.payload for e in waiting]}"
        results = await sink.send_batch(waiting)
        retry = []
        for envelope, error in zip(waiting, results, strict=True):
            if error is None:
                continue
            assert isinstance(error, RetryableError), f"{envelope.payload!r}: {error!r}"
            assert not isinstance(error, PermanentError)
            retry.append(envelope)
        failures += len(retry)
        if any(isinstance(e, ConnectionLost) for e in results):
            await sink.close()
            await connect_retrying(sink, deadline)
        elif retry:
            await asyncio.sleep(0.2)
        waiting = retry
    return failures


def payloads_of(messages: Sequence[Incoming]) -> list[bytes]:
    """The payloads of received messages, in order."""
    return [m.envelope.payload for m in messages]
