"""Ingest (a layer of bridge.runtime.route.RouteRunner): read the source, map each
message, commit the batch to the buffer, then ack the source (with `buffer: none`, hand
each message over with its ack, called once the sink confirmed it); a message that
cannot be converted or mapped is dead-lettered with the reason and acked."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from natsbridge.bridge.connector import Incoming
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    RetryableError,
)
from natsbridge.bridge.runtime.at_source import AtSourceBuffer
from natsbridge.bridge.runtime.dead_letters import origin_text, reason_of, storable
from natsbridge.bridge.runtime.endpoints import RouteEndpoints
from natsbridge.bridge.runtime.mapper import LoopDetected


class Ingest(RouteEndpoints):
    """The ingest task of a buffered route: source -> mapping -> buffer, then the source ack."""

    async def _ingest(self) -> None:
        assert self.buffer is not None
        try:
            if not await self._connect(self.source, "source"):
                return
            while not self._stopping.is_set():
                try:
                    batch = await self._receive()
                except RetryableError as exc:
                    if not await self._reconnect(self.source, "source", exc):
                        return
                    continue
                if batch:
                    await self._buffer_batch(batch)
        finally:
            self._ingest_done.set()

    async def _buffer_batch(self, batch: Sequence[Incoming]) -> None:
        buffer = self.buffer
        assert buffer is not None
        mapped: list[Envelope] = []
        settled: list[Incoming] = []
        for incoming in batch:
            self.stats.received += 1
            self.stats.received_bytes += len(incoming.envelope.payload)
            error = incoming.error
            if error is None:
                try:
                    mapped.append(self.tracing.ingest(incoming.envelope, self.mapper.map))
                    settled.append(incoming)
                    continue
                except LoopDetected as exc:
                    self.stats.looped += 1
                    self._log.debug(
                        "dropped by loop prevention: %s", exc, extra={"event": "looped"}
                    )
                    self._ack(incoming)
                    continue
                except Exception as exc:  # one message's problem, never the route's
                    error = exc
            await self._dead_letter_incoming(incoming, error)
        if not mapped:
            return
        if isinstance(buffer, AtSourceBuffer):  # buffer none: acked once the sink confirmed
            await buffer.hold(mapped, [partial(self._ack, incoming) for incoming in settled])
        else:
            await self._retry_store(partial(buffer.put, mapped))
            for incoming in settled:
                self._ack(incoming)
        self.stats.buffered += len(mapped)

    async def _dead_letter_incoming(self, incoming: Incoming, error: BaseException) -> None:
        """Dead-letter a message that could not be converted or mapped, log it, ack it."""
        assert self.buffer is not None
        reason = reason_of(error)
        envelope = storable(incoming.envelope)
        await self._retry_store(partial(self.buffer.dead_letter, envelope, reason))
        self.stats.error(error)
        self.stats.dead_letter(type(error).__name__)
        self._dead_letter_warnings.warn(
            "dead-lettered a message from %s: %s",
            origin_text(incoming.envelope),
            reason,
            extra={"event": "dead_lettered"},
        )
        self._ack(incoming)
