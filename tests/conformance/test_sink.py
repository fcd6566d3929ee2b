"""Sink definitions: order across concurrent batches, permanent refusals, reconnect."""

from __future__ import annotations

import asyncio

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import PermanentError
from tests.conformance.flow import needs, send_until_confirmed
from tests.conformance.harness import Harness, Kicker

COUNT = 120


def test_confirmed_sends_arrive_in_call_order(harness: Harness) -> None:
    """Four batches in flight at once: the broker holds them in call order."""

    async def scenario() -> None:
        address = await harness.new_address()
        reader = await harness.reader(address)
        sink = harness.make_sink(address)
        await sink.connect()
        try:
            target = harness.target(address)
            sent = [f"out-{i:03d}".encode() for i in range(COUNT)]
            envelopes = [Envelope(target, p, {"X-Seq": [str(i)]}) for i, p in enumerate(sent)]
            quarter = COUNT // 4
            batches = [envelopes[i : i + quarter] for i in range(0, COUNT, quarter)]
            results = await asyncio.gather(*(sink.send_batch(b) for b in batches))
            assert [r for batch in results for r in batch] == [None] * COUNT
            arrived = await reader.read(COUNT)
            assert [m.payload for m in arrived] == sent
            assert [dict(m.headers).get("X-Seq") for m in arrived] == [str(i) for i in range(COUNT)]
            assert await reader.read(1, timeout=1.0) == []
        finally:
            await sink.close()
            await reader.close()

    asyncio.run(scenario())


def test_a_refused_message_fails_for_good_and_the_next_ones_flow(harness: Harness) -> None:
    async def scenario() -> None:
        address = await harness.new_address()
        refused = harness.refused(address)
        needs(refused if isinstance(refused, str) else None)
        assert not isinstance(refused, str)
        poison, what = refused
        reader = await harness.reader(address)
        sink = harness.make_sink(address)
        await sink.connect()
        try:
            target = harness.target(address)
            ok = [Envelope(target, f"ok-{i}".encode()) for i in range(3)]
            results = await sink.send_batch([ok[0], poison, ok[1]])
            assert results[0] is None and results[2] is None, results
            assert isinstance(results[1], PermanentError), f"{what}: {results[1]!r}"
            assert await sink.send_batch([ok[2]]) == [None]
            arrived = await reader.read(3)
            assert [m.payload for m in arrived] == [e.payload for e in ok]
            assert await reader.read(1, timeout=1.0) == []
        finally:
            await sink.close()
            await reader.close()

    asyncio.run(scenario())


def test_survives_a_dropped_connection_without_losing_messages(harness: Harness) -> None:
    """The sink's sockets are shut down under it: sends fail retryably or go through; once
    retried as the runtime does, every message is in the broker."""

    async def scenario() -> None:
        address = await harness.new_address()
        reader = await harness.reader(address)
        kicker = Kicker(harness.ports())  # spares the reader's connection
        sink = harness.make_sink(address)
        await sink.connect()
        try:
            target = harness.target(address)
            before = [Envelope(target, f"before-{i}".encode()) for i in range(5)]
            assert await sink.send_batch(before) == [None] * 5
            assert kicker.kick() > 0, "found no connection of the sink to drop"
            after = [Envelope(target, f"after-{i}".encode()) for i in range(5)]
            await send_until_confirmed(sink, after, 60)
            expected = {e.payload for e in before + after}
            arrived: set[bytes] = set()
            for _ in range(5):  # a resend after a lost confirm may be a duplicate
                arrived |= {m.payload for m in await reader.read(len(expected - arrived))}
                if expected <= arrived:
                    break
            assert arrived == expected
        finally:
            await sink.close()
            await reader.close()

    asyncio.run(scenario())
