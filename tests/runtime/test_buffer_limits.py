"""A full route buffer holds the source back; nothing is acked and then dropped.

The real embedded buffer (SQLite in tmp_path) between an in-memory source and a sink
that confirms only when the test lets it: while the buffer is at `buffer.max_msgs` the
route takes nothing more from its source (the rest stays un-acked there), says so once,
and resumes by itself as delivery frees room. Counted, not timed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from natsbridge.bridge.broker.store import Store
from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.route import RouteRunner
from natsbridge.bridge.runtime.stats import RouteState
from tests.runtime.test_route import MemorySource

COUNT = 300
MAX_MSGS = 50
BATCH = 20  # max_in_flight: the source hands out batches of this size


class GatedSink:
    """Confirms everything, but only while `open` is set."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.delivered: list[bytes] = []

    async def connect(self) -> None:
        pass

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        await self.open.wait()
        self.delivered.extend(e.payload for e in envelopes)
        return [None] * len(envelopes)

    async def close(self) -> None:
        pass


async def until(condition: object, what: str) -> None:
    for _ in range(2000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def test_a_full_buffer_holds_the_source_back_and_resumes_by_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections: {nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}}\n"
        "routes:\n"
        "  - {name: r, from: {connection: nats, subject: 'in.>'},\n"
        "     to: {connection: nats, subject: out},\n"
        f"     max_in_flight: {BATCH}, buffer: {{max_msgs: {MAX_MSGS}}}}}\n"
    )
    config = load_config(path, {})
    [route] = config.routes
    assert route.spec.buffer is not None and route.spec.buffer.max_msgs == MAX_MSGS
    source, sink = MemorySource(COUNT), GatedSink()
    mapper = RouteMapper(route, config.bridge, config.connections["nats"])

    async def scenario() -> None:
        buffers = EmbeddedBuffers(tmp_path / "data")
        await buffers.open()
        buffer = await buffers.route(route)
        runner = RouteRunner(route, source, sink, mapper, buffer)  # type: ignore[arg-type]
        running = asyncio.create_task(runner.run())
        try:
            await until(lambda: runner.stats.state is RouteState.PAUSED, "the route paused")
            # Full: what the source handed out is buffered (and acked) or still held
            # in the batch waiting for room; the rest never left the source.
            depth = (await buffer.backlog()).depth
            assert MAX_MSGS <= depth < MAX_MSGS + BATCH
            assert source.acked == depth and len(source.waiting) == COUNT - depth - BATCH
            sink.open.set()
            await until(lambda: len(sink.delivered) == COUNT, "everything delivered")
            assert runner.stats.state is RouteState.RUNNING
            runner.stop()
            await asyncio.wait_for(running, 30)
        finally:
            running.cancel()
            await buffers.close()

    with caplog.at_level(logging.INFO, logger="natsbridge"):
        asyncio.run(scenario())
    assert sink.delivered == [str(n).encode() for n in range(COUNT)]
    assert source.acked == COUNT
    events = [getattr(r, "event", None) for r in caplog.records]
    # The route may fill up again after resuming, but says so once per time, not per poll.
    assert 1 <= events.count("buffer_held") == events.count("buffer_resumed")
    assert events.count("buffer_held") <= COUNT // BATCH
    with Store.open(tmp_path / "data", read_only=True) as store:
        assert store.stream_info("r").messages == 0


def test_routes_without_their_own_limits_take_the_bridge_s(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b, buffer: {max_msgs: 500, max_bytes: 8MiB}}\n"
        "connections: {nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}}\n"
        "routes:\n"
        "  - {name: own, from: {connection: nats, subject: 'a.>'},\n"
        "     to: {connection: nats, subject: out}, buffer: {max_msgs: 7}}\n"
        "  - {name: shared, from: {connection: nats, subject: 'b.>'},\n"
        "     to: {connection: nats, subject: out}}\n"
    )
    config = load_config(path, {})

    async def limits() -> dict[str, tuple[int, int]]:
        buffers = EmbeddedBuffers(tmp_path / "data")
        await buffers.open()
        try:
            found = {}
            for route in config.routes:
                await buffers.route(route)
                assert buffers.broker is not None
                info = await buffers.broker.stream_info(route.name)
                found[route.name] = (info.config.max_msgs, info.config.max_bytes)
            return found
        finally:
            await buffers.close()

    # A route's `buffer` overrides the keys it writes; the others are the bridge's.
    assert asyncio.run(limits()) == {"own": (7, 8 * 1024**2), "shared": (500, 8 * 1024**2)}
