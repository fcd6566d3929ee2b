"""A route stopped by a reload before its sends settled hands its taken messages back.

Without `release()` the route started in its place would wait for the buffer's ack wait
(an hour) before it could deliver them. Real embedded broker (SQLite), no network.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_released_messages_are_taken_again_at_once_by_the_next_route(tmp_path: Path) -> None:
    route = load_config(EXAMPLES / "rabbitmq-nats.yaml", {}).routes[0]

    async def scenario() -> tuple[list[bytes], list[bytes], list[int]]:
        buffers = EmbeddedBuffers(tmp_path)
        await buffers.open()
        try:
            old = await buffers.route(route)
            await old.put([Envelope("s", str(n).encode()) for n in range(5)])
            taken = await old.take(3, 5.0)
            await old.settle([taken[0].seq])  # one got through before the stop
            old.release()
            new = await buffers.route(route)  # the restarted route, same stream
            again = await new.take(10, 5.0)
            return (
                [item.envelope.payload for item in taken],
                [item.envelope.payload for item in again],
                [item.deliveries for item in again],
            )
        finally:
            await buffers.close()

    first, second, deliveries = asyncio.run(scenario())
    assert first == [b"0", b"1", b"2"]
    assert second == [b"1", b"2", b"3", b"4"]  # redeliveries first, in order, none lost
    assert deliveries == [2, 2, 1, 1]
