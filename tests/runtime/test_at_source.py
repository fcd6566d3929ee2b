"""bridge.runtime.at_source (`buffer: none`), as pure logic: a source ack runs only once
the message is settled (or dead-lettered), holding waits at capacity, order is kept."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.at_source import AtSourceBuffer
from natsbridge.bridge.runtime.buffer import Backlog


class DeadLetters:
    """Records dead letters (the embedded stream in the real bridge)."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, str]] = []

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        self.written.append((envelope.payload, reason))

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        raise AssertionError("not used")

    async def take(self, max_messages: int, timeout: float) -> Sequence[object]:
        raise AssertionError("not used")

    async def settle(self, seqs: Sequence[int]) -> None:
        raise AssertionError("not used")

    async def backlog(self) -> Backlog:
        return Backlog(0, None)


def envelopes(*payloads: str) -> list[Envelope]:
    return [Envelope("s", payload.encode()) for payload in payloads]


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_acks_run_only_when_settled_and_dead_letters_first_are_written() -> None:
    async def scenario() -> None:
        acked: list[str] = []
        dead = DeadLetters()
        buffer = AtSourceBuffer(10, dead)  # type: ignore[arg-type]
        names = ["a", "b", "c"]
        await buffer.hold(envelopes(*names), [lambda n=n: acked.append(n) for n in names])
        taken = await buffer.take(10, 0.01)
        assert [item.envelope.payload for item in taken] == [b"a", b"b", b"c"]
        assert acked == [] and (await buffer.backlog()).depth == 3
        await buffer.settle([taken[1].seq])
        assert acked == ["b"]
        await buffer.dead_letter(taken[0].envelope, "refused", taken[0].seq)
        assert dead.written == [(b"a", "refused")] and acked == ["b", "a"]
        assert (await buffer.backlog()).depth == 1
        assert await buffer.take(10, 0.01) == []  # c is taken, not handed out twice

    run(scenario())


def test_hold_waits_for_room_and_take_waits_for_messages() -> None:
    async def scenario() -> None:
        buffer = AtSourceBuffer(2, DeadLetters())  # type: ignore[arg-type]
        await buffer.hold(envelopes("a", "b"), [lambda: None] * 2)
        third = asyncio.ensure_future(buffer.hold(envelopes("c"), [lambda: None]))
        await asyncio.sleep(0.01)
        assert not third.done(), "held past its capacity"
        first = await buffer.take(1, 0.01)
        await buffer.settle([first[0].seq])
        await asyncio.wait_for(third, 1)
        rest = await buffer.take(10, 0.01)
        assert [item.envelope.payload for item in rest] == [b"b", b"c"]
        await buffer.settle([item.seq for item in rest])
        waiting = asyncio.ensure_future(buffer.take(10, 5))
        await asyncio.sleep(0.01)
        await buffer.hold(envelopes("d"), [lambda: None])
        assert [i.envelope.payload for i in await asyncio.wait_for(waiting, 1)] == [b"d"]

    run(scenario())


def test_forget_drops_what_a_closed_source_will_redeliver() -> None:
    async def scenario() -> None:
        acked: list[int] = []
        buffer = AtSourceBuffer(5, DeadLetters())  # type: ignore[arg-type]
        await buffer.hold(envelopes("a", "b"), [lambda: acked.append(1)] * 2)
        await buffer.take(1, 0.01)
        buffer.forget()
        assert await buffer.take(10, 0.01) == [] and acked == []
        assert (await buffer.backlog()) == Backlog(0, None)

    run(scenario())


def test_put_is_not_how_messages_enter() -> None:
    with pytest.raises(TypeError, match="hold"):
        run(AtSourceBuffer(1, DeadLetters()).put(envelopes("a")))  # type: ignore[arg-type]
