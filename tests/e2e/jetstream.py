"""JetStream look-ups shared by the end-to-end tests and the benchmarks."""

from __future__ import annotations

import nats
import nats.js.errors


async def stream_count(nats_url: str, stream: str) -> int:
    """How many messages `stream` holds; 0 while it does not exist."""
    nc = await nats.connect(nats_url)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()
