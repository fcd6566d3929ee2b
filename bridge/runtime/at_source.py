"""`buffer: none`: the route keeps no copy; each message stays un-acked at its source
until the sink confirmed it (the RouteBuffer of bridge.runtime.buffer, held in memory).

The ingest hands each mapped message over with its source ack (`hold`); the deliver
task takes, sends, settles and retries exactly as for a durable buffer (one path for
pipelining, retries, poison and dead letters), and settling calls the source acks.
A crash loses only what sat in memory, all of it un-acked: the source redelivers it.
Sources keep their own ack order (Kafka commits the first unsettled offset of each
partition, AMQP coalesces acks below the lowest unsettled tag), so settling out of
order after a retry never acknowledges a message that was not confirmed.

At most `capacity` messages are held: `hold` waits for room, so the source's own
window (prefetch, credit, a paused Kafka partition) holds the rest. Dead letters go to
the route's dead-letter stream in the embedded store (`dead_letters`), and the source
message is acked once that is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.runtime.buffer import Backlog, Buffered, RouteBuffer

SourceAck = Callable[[], None]
"""Acknowledges one message at its source (and counts it)."""


@dataclass(slots=True)
class _Held:
    envelope: Envelope
    ack: SourceAck
    since: float  # time.monotonic() when held
    taken: bool = False


class AtSourceBuffer:
    """The `none` buffer of one route: messages held un-acked at the source, in memory."""

    def __init__(self, capacity: int, dead_letters: RouteBuffer) -> None:
        self.capacity = capacity
        self._dead_letters = dead_letters
        self._held: OrderedDict[int, _Held] = OrderedDict()
        self._next_seq = 1
        self._untaken = 0
        self._changed = asyncio.Event()  # something was held, settled or given back

    async def hold(self, envelopes: Sequence[Envelope], acks: Sequence[SourceAck]) -> None:
        """Hold `envelopes` until delivered; each one's ack runs once the sink confirmed it.

        Waits while `capacity` messages are held (a batch larger than the capacity is
        taken whole once nothing else is held).
        """
        while self._held and len(self._held) + len(envelopes) > self.capacity:
            await self._wait_for_change(None)
        now = time.monotonic()
        for envelope, ack in zip(envelopes, acks, strict=True):
            self._held[self._next_seq] = _Held(envelope, ack, now)
            self._next_seq += 1
        self._untaken += len(envelopes)
        self._wake()

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        """Not used: a route without a buffer holds messages with their acks (`hold`)."""
        raise TypeError("buffer none holds messages with their source acks: call hold()")

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        """Up to `max_messages` held messages not yet handed out, in order."""
        if not self._untaken:
            await self._wait_for_change(timeout)
        taken: list[Buffered] = []
        for seq, held in self._held.items():
            if len(taken) >= max_messages:
                break
            if not held.taken:
                held.taken = True
                taken.append(Buffered(seq, held.envelope, 1))
        self._untaken -= len(taken)
        return taken

    async def settle(self, seqs: Sequence[int]) -> None:
        """Ack each message at its source: the sink confirmed it."""
        for seq in seqs:
            held = self._held.pop(seq, None)
            if held is not None:
                held.ack()
        self._wake()

    def release(self) -> None:
        """Hand back every message taken and not settled, to be taken again at once."""
        for held in self._held.values():
            held.taken = False
        self._untaken = len(self._held)
        self._wake()

    def forget(self) -> None:
        """Drop everything held: its source was closed, and redelivers it to the next one."""
        self._held.clear()
        self._untaken = 0
        self._wake()

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        """Write `envelope` to the dead-letter stream; then ack the held message `seq`."""
        await self._dead_letters.dead_letter(envelope, reason)
        if seq is not None:
            await self.settle([seq])

    async def backlog(self) -> Backlog:
        """What is held (un-acked at the source), how old the oldest is, its payload bytes."""
        if not self._held:
            return Backlog(0, None)
        oldest = next(iter(self._held.values())).since
        size = sum(len(held.envelope.payload) for held in self._held.values())
        return Backlog(len(self._held), time.monotonic() - oldest, size)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
