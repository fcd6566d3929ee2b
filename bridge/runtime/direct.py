"""Direct delivery without a buffer (a layer of bridge.runtime.route.RouteRunner):
at_most_once routes, and request/reply, where each request waits for its answer."""

from __future__ import annotations

import asyncio
from functools import partial

from natsbridge.bridge.connector import Incoming, Requester, Responder, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    PermanentError,
    RetryableError,
)
from natsbridge.bridge.runtime.dead_letters import origin_text, reason_of
from natsbridge.bridge.runtime.endpoints import RouteEndpoints
from natsbridge.bridge.runtime.mapper import LoopDetected
from natsbridge.mappings.headers import NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE


class Direct(RouteEndpoints):
    """at_most_once and request/reply: each message goes straight to the sink."""

    async def _direct(self) -> None:
        """at_most_once and request/reply: hand each message straight to the sink."""
        if not await self._connect(self.source, "source"):
            return
        slots = asyncio.Semaphore(self.route.spec.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            try:
                batch = await self._receive()
            except RetryableError as exc:
                if not await self._reconnect(self.source, "source", exc):
                    break
                continue
            for incoming in batch:
                await slots.acquire()
                task = asyncio.create_task(self._forward(incoming))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: slots.release())
        if tasks:
            await asyncio.wait(tasks, timeout=self.route.spec.retry.max)

    async def _forward(self, incoming: Incoming) -> None:
        self.stats.received += 1
        self.stats.received_bytes += len(incoming.envelope.payload)
        self._ack(incoming)  # at most once: the source forgets it now
        generation = self._sink_generation
        self.stats.in_flight += 1
        try:
            if incoming.error is not None:
                raise incoming.error
            envelope = self.tracing.ingest(incoming.envelope, self.mapper.map)
            if self.route.spec.request_reply is not None and incoming.envelope.reply:
                await self._request(incoming.envelope, envelope)
            else:
                await self.tracing.send(envelope, partial(send_one, self.sink))
            self._count_delivered([envelope])
        except LoopDetected:
            self.stats.looped += 1
        except Exception as exc:  # at most once: count it, log it, move on
            self.stats.error(exc)
            self.stats.dropped += 1
            self._log.warning(
                "message from %s dropped (at_most_once): %s",
                origin_text(incoming.envelope),
                reason_of(exc),
                extra={"event": "dropped"},
            )
            if isinstance(exc, ConnectionLost):
                await self._reconnect_sink_once(exc, generation)
        finally:
            self.stats.in_flight -= 1

    async def _reconnect_sink_once(self, exc: ConnectionLost, generation: int) -> None:
        """Reconnect the sink once for all the sends that saw the same connection fail."""
        async with self._sink_reconnecting:
            if generation == self._sink_generation:
                await self._reconnect(self.sink, "sink", exc)
                self._sink_generation += 1

    async def _request(self, request: Envelope, mapped: Envelope) -> None:
        assert self.route.spec.request_reply is not None
        if not isinstance(self.sink, Requester) or not isinstance(self.source, Responder):
            raise PermanentError("this route's connectors cannot carry request/reply")
        try:
            reply = await self.sink.request(mapped, self.route.spec.request_reply.timeout)
        except BridgeError as exc:
            # The requester hears at once why there is no answer, instead of timing out.
            code = "408" if isinstance(exc, BridgeTimeout) else "503"
            status = {NATS_SERVICE_ERROR_CODE: [code], NATS_SERVICE_ERROR: [reason_of(exc)]}
            await self.source.respond(request, Envelope(request.reply or "", b"", status))
            raise
        await self.source.respond(request, reply)
