"""Discard policy "hold": a full stream refuses writes (its writers wait), never deletes.

The route buffer's policy: a batch that starts below the limits goes in whole (so no
batch can be refused for ever), the next one gets StreamFull until acks free room, and
no limit, not even one lowered on a restart, removes a stored message.
"""

from __future__ import annotations

import pytest

from natsbridge.bridge.broker.config import (
    ConsumerConfig,
    Discard,
    Outgoing,
    Retention,
    StreamConfig,
)
from natsbridge.bridge.errors import StreamFull
from tests.broker.conftest import OpenStore


def batch(n: int, size: int = 10) -> list[Outgoing]:
    return [Outgoing("s", b"x" * size, None, None) for _ in range(n)]


def hold(**limits: int) -> StreamConfig:
    return StreamConfig(
        name="r", retention=Retention.WORKQUEUE, discard=Discard.HOLD, dead_letter="r.dl", **limits
    )


def test_a_batch_begun_below_the_limit_goes_in_whole_then_writers_wait(
    open_store: OpenStore,
) -> None:
    store = open_store()
    store.add_stream(hold(max_msgs=10))
    store.add_consumer("r", ConsumerConfig(name="deliver"))
    store.publish_many("r", batch(8))
    store.publish_many("r", batch(25))  # begun at 8 < 10: taken whole
    store.commit()
    with pytest.raises(StreamFull, match="discard policy is 'hold'"):
        store.publish_many("r", batch(1))
    with pytest.raises(StreamFull):
        store.publish("r", "s", b"x")
    assert store.stream_info("r").messages == 33  # nothing was evicted to make room
    fetched = store.fetch("r", "deliver", 24).messages
    for row in fetched:
        store.ack("r", "deliver", row[0])
    store.commit()
    store.publish_many("r", batch(3))  # 9 left: room again
    assert store.stream_info("r").messages == 12


def test_bytes_hold_too(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(hold(max_bytes=100))
    store.publish_many("r", batch(20, size=9))  # 200 bytes, begun at 0
    with pytest.raises(StreamFull):
        store.publish_many("r", batch(1))
    assert store.stream_info("r").messages == 20


def test_a_lowered_limit_keeps_what_is_stored(open_store: OpenStore) -> None:
    store = open_store()
    store.add_stream(hold(max_msgs=100))
    store.publish_many("r", batch(50))
    store.commit()
    store.close()
    store = open_store()
    store.add_stream(hold(max_msgs=10, max_bytes=20))
    store.commit()
    assert store.stream_info("r").messages == 50
    with pytest.raises(StreamFull):
        store.publish_many("r", batch(1))
