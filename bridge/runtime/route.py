"""One route at run time: source -> mapping -> buffer -> sink, as two asyncio tasks.

`at_least_once` / `exactly_once`: the *ingest* task reads from the source, maps each
message and commits the batch to the durable buffer, then acks the source; the
*deliver* task takes buffered messages in order and sends them in windows of
`max_in_flight / PIPELINE`, each as one batch (the sink publishes them in order and
pipelines the confirms), up to `PIPELINE` windows in flight; it settles the confirmed
ones and retries the rest with back-off. A message that cannot be mapped, that the
destination refuses for good, or that keeps making the destination drop the connection
(poison), goes to the dead-letter stream with the reason; the messages after it keep
flowing. Reconnects always back off (`_reconnect`).

One boundary around each message on the way in: whatever goes wrong while a source
converts it (`Incoming.error`) or the mapper maps it — a PermanentError or any other
exception, a bug included — dead-letters that one message with the reason, counts it,
logs one warning with the route and the source coordinates, and acks it. It never
stops the route, another route or the process.

`buffer: none` (a durable source and a durable sink): the same two tasks, with
bridge.runtime.at_source in place of the durable buffer: the ingest hands each message
over with its source ack, and the ack runs only once the sink confirmed the message.

`at_most_once`: no buffer: the source message is acked as soon as it was handed to the
sink. Request/reply routes are at_most_once by nature: each request waits for its
answer (bounded by `max_in_flight` at a time) and the answer goes back to the requester.

Ordering: messages of one source queue/partition are buffered and sent in order. When
a window fails part-way, the windows in flight are settled and everything that failed is
resent in order before anything newer, so a retry can only reorder messages within
`max_in_flight`; without failures the order is the source's. After a lost connection
the oldest failed message goes first, alone (poison detection, see `_settle_until_done`).

The parts, one module each: bridge.runtime.endpoints (state, connections, back-off),
bridge.runtime.ingest, bridge.runtime.deliver (pipelined windows), bridge.runtime.settle
(the settle/retry policy) and bridge.runtime.direct (no buffer).
"""

from __future__ import annotations

import asyncio

from natsbridge.bridge import logs
from natsbridge.bridge.runtime.at_source import AtSourceBuffer
from natsbridge.bridge.runtime.backoff import Backoff
from natsbridge.bridge.runtime.dead_letters import reason_of
from natsbridge.bridge.runtime.deliver import Deliver
from natsbridge.bridge.runtime.direct import Direct
from natsbridge.bridge.runtime.ingest import Ingest
from natsbridge.bridge.runtime.stats import RouteState


class RouteRunner(Ingest, Deliver, Direct):
    """Runs one route until stopped; `stats` shows how it is doing."""

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Connect and move messages until `stop()`; then drain and close.

        The last boundary: a failure that nothing inside caught (a bug, a client library
        whose thread died) stops this route only. It is logged with its traceback, the
        route reads `failed`, both ends are closed (what was not settled stays at the
        source or in the buffer, to be read again), and the route starts over with
        back-off, on new connectors when `endpoints` can build them. Other routes and
        the process carry on.
        """
        logs.route_context(self.route.name)  # for the connectors' lines, their threads' too
        backoff = Backoff(self.route.spec.retry)
        try:
            while True:
                self.stats.state = RouteState.CONNECTING
                self._ingest_done.clear()
                try:
                    await self._run_once()
                    return
                except Exception as exc:
                    self.stats.error(exc)
                    self.stats.state = RouteState.FAILED
                    self.stats.in_flight = 0  # taken again from the buffer after its ack wait
                    stopping = self._stopping.is_set()
                    delay = backoff.next()
                    self._log.error(
                        "route failed%s: %s",
                        "" if stopping else f", restarting in {delay:.1f}s",
                        reason_of(exc),
                        exc_info=exc,
                        extra={"event": "route_failed"},
                    )
                    if stopping:
                        return
                await self._close()
                await self._sleep(delay)
                if self._endpoints is not None:
                    self.source, self.sink = self._endpoints()
        finally:
            await self._close()
            self._dead_letter_warnings.flush()  # the count of those not logged one by one
            if self.stats.state is not RouteState.FAILED:
                self.stats.state = RouteState.STOPPED

    async def _run_once(self) -> None:
        if self.buffer is None:
            await self._connect(self.sink, "sink")
            await self._direct()
            return
        if isinstance(self.buffer, AtSourceBuffer):
            self.buffer.forget()  # held for a closed source, which gives them to the next
        tasks = [asyncio.ensure_future(work) for work in (self._ingest(), self._deliver())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # the first failure, if any
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # one side failed (or run() was cancelled): stop the other
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Stop reading from the source; `run()` returns once in-flight work is settled."""
        self.stats.state = RouteState.DRAINING
        self._stopping.set()

    async def _close(self) -> None:
        for name, endpoint in (("source", self.source), ("sink", self.sink)):
            try:
                await endpoint.close()
            except Exception as exc:  # closing must not hide what run() was doing
                self._log.warning(
                    "closing the %s failed: %s", name, exc, extra={"event": "close_failed"}
                )
