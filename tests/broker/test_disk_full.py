"""A full disk pauses the embedded broker; it reopens by itself once space returns.

Run on a real, small tmpfs (ENOSPC from the kernel, SQLITE_FULL from SQLite), with a
filler file the test deletes to "free space". Counted: every message stored before the
disk filled is still there afterwards, acks of messages handed out before the failure
still count, and nothing handed out is given out a second time while it is in flight.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from natsbridge.bridge.broker.broker import Broker
from natsbridge.bridge.broker.config import ConsumerConfig, Outgoing, Retention, StreamConfig
from natsbridge.bridge.errors import StoreError
from tests.broker.mounts import tmpfs

BATCH = [Outgoing("s", b"x" * 1000, None, None)] * 50
RECOVERY_TIMEOUT_S = 60.0


async def fill(broker: Broker) -> int:
    """Publish batches until the disk is full; how many messages were stored."""
    stored = 0
    while True:
        try:
            await broker.publish_many("r", BATCH)
        except StoreError as exc:
            assert "database or disk is full" in str(exc), exc
            return stored
        stored += len(BATCH)
        assert stored < 100_000, "the disk never filled"


async def until_recovered(broker: Broker) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        try:
            await broker.publish_many("r", BATCH)
            return
        except StoreError as exc:
            assert "unavailable" in str(exc) or "disk is full" in str(exc), exc
            assert time.monotonic() < deadline, "the broker never reopened"
            await asyncio.sleep(0.2)


def test_a_full_disk_pauses_the_broker_until_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        with tmpfs(tmp_path / "mnt", "4m") as mnt:
            filler = mnt / "filler"
            filler.write_bytes(os.urandom(2 * 1024 * 1024))
            broker = await Broker.open(mnt / "data")
            try:
                await broker.add_stream(
                    StreamConfig(name="r", retention=Retention.WORKQUEUE, dead_letter="r.dl")
                )
                await broker.add_consumer("r", ConsumerConfig(name="deliver", ack_wait=3600))
                await broker.publish_many("r", BATCH)
                early = await broker.fetch("r", "deliver", 10, timeout=1)
                assert len(early) == 10

                stored = len(BATCH) + await fill(broker)
                with pytest.raises(StoreError):
                    await broker.fetch("r", "deliver", 10, timeout=1)
                for msg in early:  # acked while the store is down: applied after the reopen
                    msg.ack()

                filler.unlink()
                await until_recovered(broker)
                stored += len(BATCH)

                info = await broker.stream_info("r")
                assert info.messages == stored - len(early)
                taken = []
                while batch := await broker.fetch("r", "deliver", 1000, timeout=0.5):
                    taken.extend(batch)
                # The ten handed out before were acked, not handed out again.
                assert len(taken) == stored - len(early)
                assert not {m.seq for m in taken} & {m.seq for m in early}
                for msg in taken:
                    msg.ack()
                await broker.flush()
                assert (await broker.stream_info("r")).messages == 0
            finally:
                await broker.close()

    asyncio.run(main())
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("buffer_unavailable") == 1, "one line per outage, not per attempt"
    assert events.count("buffer_recovered") == 1
