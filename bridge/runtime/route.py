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

`at_most_once`: no buffer: the source message is acked as soon as it was handed to the
sink. Request/reply routes are at_most_once by nature: each request waits for its
answer (bounded by `max_in_flight` at a time) and the answer goes back to the requester.

Ordering: messages of one source queue/partition are buffered and sent in order. When
a window fails part-way, the windows in flight are settled and everything that failed is
resent in order before anything newer, so a retry can only reorder messages within
`max_in_flight`; without failures the order is the source's. After a lost connection
the oldest failed message goes first, alone (poison detection, see `_settle_until_done`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import Incoming, Requester, Responder, Sink, Source, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    BridgeTimeout,
    ConnectionLost,
    PermanentError,
    RetryableError,
    StoreError,
    StreamFull,
)
from natsbridge.bridge.runtime.backoff import Backoff
from natsbridge.bridge.runtime.buffer import Buffered, RouteBuffer
from natsbridge.bridge.runtime.dead_letters import buffered_text, origin_text, reason_of, storable
from natsbridge.bridge.runtime.mapper import LoopDetected, RouteMapper
from natsbridge.bridge.runtime.stats import RouteState, RouteStats
from natsbridge.mappings.headers import NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE

log = logging.getLogger("natsbridge.route")

RECEIVE_TIMEOUT_S = 0.5
FULL_POLL_S = 0.1  # how often a full buffer is asked again for room
PIPELINE = 2  # delivery windows in flight at once, max_in_flight messages in all
MAX_UNEXPECTED_FAILURES = 5  # a bug in a connector must not retry one message forever
HEALTHY_AFTER_S = 10.0  # a connection up this long resets the reconnect back-off

T = TypeVar("T")


class RouteRunner:
    """Runs one route until stopped; `stats` shows how it is doing."""

    def __init__(
        self,
        route: Route,
        source: Source,
        sink: Sink,
        mapper: RouteMapper,
        buffer: RouteBuffer | None,
        endpoints: Callable[[], tuple[Source, Sink]] | None = None,
    ) -> None:
        self.route = route
        self.source = source
        self.sink = sink
        self._endpoints = endpoints  # fresh source and sink for a restart after a failure
        self.mapper = mapper
        self.buffer = buffer
        self.stats = RouteStats()
        self.batch = min(route.spec.max_in_flight, 1000)
        self._stopping = asyncio.Event()
        self._ingest_done = asyncio.Event()
        self._sink_reconnecting = asyncio.Lock()
        self._sink_generation = 0  # bumped on every sink reconnect
        # One back-off per side that outlives a connection: a broker that takes the
        # connection and drops it at once must not be reconnected to in a tight loop.
        self._backoff = {role: Backoff(route.spec.retry) for role in ("source", "sink")}
        self._connected_at = {"source": 0.0, "sink": 0.0}  # time.monotonic() of the connect
        self._log = _RouteLog(log, {"route": route.name})

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
            if self.stats.state is not RouteState.FAILED:
                self.stats.state = RouteState.STOPPED

    async def _run_once(self) -> None:
        if self.buffer is None:
            await self._connect(self.sink, "sink")
            await self._direct()
            return
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

    async def _connect(self, endpoint: Source | Sink, role: str) -> bool:
        """Connect `endpoint`, retrying with back-off; False if the route stopped first.

        A permanent refusal (bad credentials, a missing stream that must not be created)
        marks the route failed and is retried every `retry.max` seconds, so that the
        process stays up, /readyz names the route, and fixing the broker side heals it.
        The source gives up once the route is stopping; the sink keeps trying while
        buffered work waits, until the bridge's drain timeout cancels it.
        """
        backoff = self._backoff[role]  # reset only once the connection proved healthy
        endpoint_connection = self._connection_of(role)
        while not self._stopping.is_set() or (role == "sink" and self._work_left()):
            try:
                await endpoint.connect()
            except BridgeError as exc:
                self.stats.error(exc)
                if isinstance(exc, RetryableError):
                    delay = backoff.next()
                    log = self._log.warning
                else:
                    delay = self.route.spec.retry.max
                    self.stats.state = RouteState.FAILED
                    log = self._log.error
                log(
                    "cannot connect the %s, retrying in %.1fs: %s",
                    role,
                    delay,
                    exc,
                    extra={"event": "connect_failed", "connection": endpoint_connection},
                )
                await self._pause(delay)
                continue
            self._connected_at[role] = time.monotonic()
            setattr(self.stats, f"{role}_connected", True)
            if self.stats.state is not RouteState.DRAINING:
                self.stats.state = RouteState.RUNNING
            return True
        return False

    def _connection_of(self, role: str) -> str:
        return self.route.source.connection if role == "source" else self.route.sink.connection

    def _work_left(self) -> bool:
        """Whether buffered messages still wait for the sink (as last sampled)."""
        return not self._ingest_done.is_set() or self.stats.buffer_depth > 0

    async def _reconnect(self, endpoint: Source | Sink, role: str, exc: BaseException) -> bool:
        """Reconnect after a lost connection, always after a back-off delay.

        The back-off starts over only when the lost connection had proved healthy: it
        was up for `HEALTHY_AFTER_S`, or (the sink) a delivery was confirmed on it.
        """
        self.stats.error(exc)
        self.stats.reconnects += 1
        setattr(self.stats, f"{role}_connected", False)
        if self.stats.state is not RouteState.DRAINING:
            self.stats.state = RouteState.RECONNECTING
        backoff = self._backoff[role]
        if time.monotonic() - self._connected_at[role] >= HEALTHY_AFTER_S:
            backoff.reset()
        delay = backoff.next()
        self._log.warning(
            "%s connection lost, reconnecting in %.1fs: %s",
            role,
            delay,
            exc,
            extra={"event": "reconnecting", "connection": self._connection_of(role)},
        )
        await self._pause(delay)
        return await self._connect(endpoint, role)

    async def _pause(self, seconds: float) -> None:
        """A back-off delay; while draining only the sink retries, and without waking early."""
        await (asyncio.sleep(seconds) if self._stopping.is_set() else self._sleep(seconds))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the route is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------ buffered delivery

    async def _ingest(self) -> None:
        assert self.buffer is not None
        try:
            if not await self._connect(self.source, "source"):
                return
            while not self._stopping.is_set():
                try:
                    batch = await self.source.receive(self.batch, RECEIVE_TIMEOUT_S)
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
                    mapped.append(self.mapper.map(incoming.envelope))
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
        if mapped:
            await self._retry_store(partial(buffer.put, mapped))
            self.stats.buffered += len(mapped)
        for incoming in settled:
            self._ack(incoming)

    async def _dead_letter_incoming(self, incoming: Incoming, error: BaseException) -> None:
        """Dead-letter a message that could not be converted or mapped, log it, ack it."""
        assert self.buffer is not None
        reason = reason_of(error)
        envelope = storable(incoming.envelope)
        await self._retry_store(partial(self.buffer.dead_letter, envelope, reason))
        self.stats.error(error)
        self.stats.dead_letter(type(error).__name__)
        self._log.warning(
            "dead-lettered a message from %s: %s",
            origin_text(incoming.envelope),
            reason,
            extra={"event": "dead_lettered"},
        )
        self._ack(incoming)

    def _ack(self, incoming: Incoming) -> None:
        incoming.ack(None)
        self.stats.acked += 1

    async def _retry_store(self, call: Callable[[], Awaitable[T]]) -> T:
        """Call the buffer until it answers: a full or failing buffer holds the source back.

        Nothing is acked meanwhile, so the source's prefetch window holds the rest. A full
        buffer (StreamFull) is tried again every FULL_POLL_S, as delivery frees room; a
        failing one (disk full: the broker reopens it) with back-off. The route is PAUSED
        meanwhile, with one log line when that starts and one when it ends.
        """
        backoff = Backoff(self.route.spec.retry)
        held = False
        while True:
            try:
                result = await call()
            except StoreError as exc:
                self.stats.error(exc)
                if self.stats.state is RouteState.RUNNING:
                    self.stats.state = RouteState.PAUSED
                if not held:
                    held = True
                    self._log.warning(
                        "buffer %s, holding the source back: %s",
                        "full" if isinstance(exc, StreamFull) else "unavailable",
                        exc,
                        extra={"event": "buffer_held"},
                    )
                if isinstance(exc, StreamFull):
                    await asyncio.sleep(FULL_POLL_S)
                else:
                    self.stats.retries += 1
                    await asyncio.sleep(backoff.next())
                continue
            if held:
                if self.stats.state is RouteState.PAUSED:
                    self.stats.state = RouteState.RUNNING
                self._log.info("buffer takes writes again", extra={"event": "buffer_resumed"})
            return result

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
        sending: deque[tuple[Sequence[Buffered], asyncio.Future[list[BaseException | None]]]]
        sending = deque()
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
                # A failure: settle the windows in flight, then retry all that failed, in order.
                everything, outcomes = list(items), list(results)
                while sending:
                    later, later_results = sending.popleft()
                    everything.extend(later)
                    outcomes.extend(await later_results)
                await self._settle_until_done(everything, outcomes)
        finally:
            taking.cancel()
            for _, pending in sending:
                pending.cancel()

    def _send(self, items: Sequence[Buffered]) -> asyncio.Future[list[BaseException | None]]:
        self.stats.in_flight += len(items)
        self.stats.redelivered += sum(1 for item in items if item.deliveries > 1)
        return asyncio.ensure_future(self.sink.send_batch([item.envelope for item in items]))

    async def _settle_until_done(
        self, items: Sequence[Buffered], results: Sequence[BaseException | None]
    ) -> None:
        """Settle `items` as `results` say, resending what failed until delivered or dead.

        After a lost connection nobody knows which message, if any, made the destination
        drop it: the oldest failed message is sent again alone, on the new connection,
        and the rest follow as one batch once it got through. A message that loses the
        connection `retry.poison_after` times when sent alone is dead-lettered as poison.
        A broker that is down never counts: only sends on an established connection do.
        """
        assert self.buffer is not None
        pending, outcomes = list(items), list(results)
        waiting: list[Buffered] = []  # failed, older-first, not yet sent again
        backoff = Backoff(self.route.spec.retry)
        failures: dict[int, int] = {}
        strikes: dict[int, int] = {}
        alone = False  # `pending` is one message sent alone on a fresh connection
        while True:
            retry, lost = await self._settle_outcomes(pending, outcomes, failures)
            if alone and lost is not None and retry:
                [suspect] = retry
                times = strikes[suspect.seq] = strikes.get(suspect.seq, 0) + 1
                if times >= self.route.spec.retry.poison_after:
                    reason = (
                        f"poison: lost the connection all {times} times it was sent alone: {lost}"
                    )
                    await self._dead_letter_buffered(suspect, reason, "poison")
                    retry = []
            waiting = retry + waiting
            if not waiting:
                return
            self.stats.retries += len(retry)
            if lost is not None:
                if not await self._reconnect(self.sink, "sink", lost):
                    return  # stopped: the rest stays buffered for the next start
            elif retry:
                await asyncio.sleep(backoff.next())
            # After a lost connection the oldest goes alone; once it passed, the rest.
            alone = lost is not None
            pending, waiting = (waiting[:1], waiting[1:]) if alone else (waiting, [])
            outcomes = await self.sink.send_batch([item.envelope for item in pending])

    async def _settle_outcomes(
        self,
        items: Sequence[Buffered],
        results: Sequence[BaseException | None],
        failures: dict[int, int],
    ) -> tuple[list[Buffered], ConnectionLost | None]:
        """Settle the confirmed, dead-letter the refused; the rest, and a ConnectionLost seen."""
        assert self.buffer is not None
        done = [item for item, result in zip(items, results, strict=True) if result is None]
        if done:
            await self.buffer.settle([item.seq for item in done])
            self.stats.in_flight -= len(done)
            self._count_delivered([item.envelope for item in done])
            self._backoff["sink"].reset()  # the sink's connection works
        if len(done) == len(items):
            return [], None
        retry: list[Buffered] = []
        lost: ConnectionLost | None = None
        for item, result in zip(items, results, strict=True):
            if result is None:
                continue
            if isinstance(result, PermanentError) or (
                not isinstance(result, RetryableError)
                and failures.setdefault(item.seq, 0) >= MAX_UNEXPECTED_FAILURES
            ):
                await self._dead_letter_buffered(item, reason_of(result), type(result).__name__)
                continue
            if not isinstance(result, RetryableError):
                failures[item.seq] += 1
                self._log.error(
                    "unexpected error from the sink",
                    exc_info=result,
                    extra={"event": "sink_error", "connection": self.route.sink.connection},
                )
            if isinstance(result, ConnectionLost):
                lost = result
            retry.append(item)
        if lost is None and retry:
            self.stats.error(next(r for r in results if isinstance(r, BaseException)))
        return retry, lost

    async def _dead_letter_buffered(self, item: Buffered, reason: str, kind: str) -> None:
        """Move a buffered message to the dead letters: counted, and one WARNING line."""
        assert self.buffer is not None
        await self._retry_store(partial(self.buffer.dead_letter, item.envelope, reason, item.seq))
        self.stats.dead_letter(kind)
        self.stats.in_flight -= 1
        self._log.warning(
            "message dead-lettered (%s): %s",
            buffered_text(item),
            reason,
            extra={"event": "dead_lettered", "connection": self.route.sink.connection},
        )

    def _count_delivered(self, envelopes: Sequence[Envelope]) -> None:
        now = time.time()
        stats = self.stats
        stats.delivered += len(envelopes)
        for envelope in envelopes:
            stats.delivered_bytes += len(envelope.payload)
            stats.latency.observe(max(now - envelope.timestamp, 0.0))

    # ------------------------------------------------------------ direct (no buffer)

    async def _direct(self) -> None:
        """at_most_once and request/reply: hand each message straight to the sink."""
        if not await self._connect(self.source, "source"):
            return
        slots = asyncio.Semaphore(self.route.spec.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            try:
                batch = await self.source.receive(self.batch, RECEIVE_TIMEOUT_S)
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
            envelope = self.mapper.map(incoming.envelope)
            if self.route.spec.request_reply is not None and incoming.envelope.reply:
                await self._request(incoming.envelope, envelope)
            else:
                await send_one(self.sink, envelope)
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


class _RouteLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the route's name to every record, merged with the call's own `extra` fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
