"""The embedded route buffer reads back only what it wrote itself, whatever a message carries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from natsbridge.bridge.config import load_config
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

SPOOFED = {
    "Bridge-Buffer-Key": ["base64:!!"],  # not base64: the buffer used to decode it and die
    "Bridge-Buffer-Time": ["soon"],  # not a number
    "X-Id": ["7"],
}


def test_a_message_cannot_set_the_buffer_private_headers(tmp_path: Path) -> None:
    config = load_config(EXAMPLES / "rabbitmq-nats.yaml", {})
    route = config.routes[0]

    async def put_and_take() -> list[Envelope]:
        buffers = EmbeddedBuffers(tmp_path)
        await buffers.open()
        try:
            buffer = await buffers.route(route)
            sent = [
                Envelope("a", b"with key", dict(SPOOFED), key=b"k1", timestamp=1000.5),
                Envelope("b", b"without key", dict(SPOOFED), timestamp=2000.25),
            ]
            await buffer.put(sent)
            return [item.envelope for item in await buffer.take(10, 5.0)]
        finally:
            await buffers.close()

    with_key, without_key = asyncio.run(put_and_take())
    assert (with_key.key, with_key.timestamp) == (b"k1", 1000.5)
    assert (without_key.key, without_key.timestamp) == (None, 2000.25)
    for taken in (with_key, without_key):
        assert taken.headers == {
            "%42ridge-Buffer-Key": ["base64:!!"],
            "%42ridge-Buffer-Time": ["soon"],
            "X-Id": ["7"],
        }


def test_backlog_counts_the_bytes_waiting_and_frees_them_on_settle(tmp_path: Path) -> None:
    """natsbridge_buffer_bytes: what a route's buffer holds on disk."""
    route = load_config(EXAMPLES / "rabbitmq-nats.yaml", {}).routes[0]

    async def backlogs() -> list[tuple[int, int]]:
        buffers = EmbeddedBuffers(tmp_path)
        await buffers.open()
        try:
            buffer = await buffers.route(route)
            seen = [await buffer.backlog()]
            await buffer.put([Envelope("a", b"x" * 1000, {}), Envelope("b", b"y" * 3000, {})])
            seen.append(await buffer.backlog())
            taken = await buffer.take(1, 5.0)
            await buffer.settle([item.seq for item in taken])
            await buffers.close()  # commits the settle
            await buffers.open()
            seen.append(await (await buffers.route(route)).backlog())
            return [(backlog.depth, backlog.bytes) for backlog in seen]
        finally:
            await buffers.close()

    (empty, empty_bytes), (full, full_bytes), (left, left_bytes) = asyncio.run(backlogs())
    assert (empty, full, left) == (0, 2, 1)
    assert empty_bytes == 0 and full_bytes > 4000 and 3000 < left_bytes < full_bytes - 1000
