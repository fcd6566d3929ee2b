"""Pipelined delivery (a layer of bridge.runtime.route.RouteRunner): take buffered
messages in order and send them in windows, `PIPELINE` windows in flight."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

from natsbridge.bridge.runtime.buffer import Buffered
from natsbridge.bridge.runtime.endpoints import RECEIVE_TIMEOUT_S
from natsbridge.bridge.runtime.settle import SettlePolicy

PIPELINE = 2  # delivery windows in flight at once, max_in_flight messages in all

Window = tuple[Sequence[Buffered], asyncio.Future[list[BaseException | None]]]
"""Buffered messages on the wire as one batch, and the future of their outcomes."""


class Deliver(SettlePolicy):
    """The deliver task of a buffered route: buffer -> sink, in pipelined windows."""

    async def _deliver(self) -> None:
        """Send buffered messages in order, `PIPELINE` windows in flight, until drained.

        At most `max_in_flight` messages are in flight: windows of max_in_flight/PIPELINE
        (one window of one message when max_in_flight is 1).

        While the oldest window waits for its confirms the next is already on the wire
        and the one after is being read from the buffer (a take waits for the buffer's
        current commit, often the fsync of a put). Windows are settled in order. When
        one has failures, the windows in flight are settled too and everything that
        failed is retried in order (`_settle_until_done`) before anything new is sent.
        """
        assert self.buffer is not None
        if not await self._connect(self.sink, "sink"):
            return
        buffer = self.buffer
        depth = min(PIPELINE, self.route.spec.max_in_flight)
        window = self.route.spec.max_in_flight // depth
        sending: deque[Window] = deque()
        take = partial(self._retry_store, partial(buffer.take, window, RECEIVE_TIMEOUT_S))
        taking = asyncio.ensure_future(take())
        try:
            while True:
                while len(sending) < depth and taking.done():
                    items = taking.result()
                    taking = asyncio.ensure_future(take())
                    if not items:
                        if not sending and self._ingest_done.is_set():
                            return  # stopped, and everything buffered was delivered
                        break
                    sending.append((items, self._send(items)))
                if not sending:
                    await asyncio.wait([taking])
                    continue
                oldest = sending[0][1]
                if not oldest.done():
                    wake: list[asyncio.Future[Any]] = [oldest]
                    if len(sending) < depth and not taking.done():
                        wake.append(taking)
                    await asyncio.wait(wake, return_when=asyncio.FIRST_COMPLETED)
                    continue
                items, results = sending.popleft()[0], oldest.result()
                if all(result is None for result in results):
                    await self._settle_until_done(items, results)
                    continue
                await self._settle_after_failure(items, results, sending)
        finally:
            taking.cancel()
            for _, pending in sending:
                pending.cancel()

    async def _settle_after_failure(
        self,
        items: Sequence[Buffered],
        results: Sequence[BaseException | None],
        sending: deque[Window],
    ) -> None:
        """A failure: settle the windows in flight, then retry all that failed, in order."""
        everything, outcomes = list(items), list(results)
        while sending:
            later, later_results = sending.popleft()
            everything.extend(later)
            outcomes.extend(await later_results)
        await self._settle_until_done(everything, outcomes)

    def _send(self, items: Sequence[Buffered]) -> asyncio.Future[list[BaseException | None]]:
        self.stats.in_flight += len(items)
        self.stats.redelivered += sum(1 for item in items if item.deliveries > 1)
        self.tracing.deliver(items)  # spans, and the outgoing traceparent
        return asyncio.ensure_future(self.sink.send_batch([item.envelope for item in items]))
