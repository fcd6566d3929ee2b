"""The part of a route every path shares (a layer of bridge.runtime.route.RouteRunner):
its state, connecting and reconnecting with back-off, acking the source, holding the
source back while the buffer is full or failing, and counting deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from natsbridge.bridge import logs
from natsbridge.bridge.config.loader import Route
from natsbridge.bridge.connector import Incoming, Sink, Source
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import (
    BridgeError,
    RetryableError,
    StoreError,
    StreamFull,
)
from natsbridge.bridge.runtime.backoff import Backoff
from natsbridge.bridge.runtime.buffer import RouteBuffer
from natsbridge.bridge.runtime.dead_letters import DeadLetterWarnings
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.stats import RouteState, RouteStats
from natsbridge.bridge.tracing import RouteTracing

log = logging.getLogger(logs.ROUTE_LOGGER)

RECEIVE_TIMEOUT_S = 0.5
FULL_POLL_S = 0.1  # how often a full buffer is asked again for room
PAUSE_WAIT_S = 10.0  # longest a pause waits for a read under way (a source slow to return)
DRAIN_POLL_S = 0.25  # while draining, how often a sink's back-off checks for work left
HEALTHY_AFTER_S = 10.0  # a connection up this long resets the reconnect back-off

T = TypeVar("T")


class RouteEndpoints:
    """The base of RouteRunner: its state, its connections, and what all paths share."""

    def __init__(
        self,
        route: Route,
        source: Source,
        sink: Sink,
        mapper: RouteMapper,
        buffer: RouteBuffer | None,
        endpoints: Callable[[], tuple[Source, Sink]] | None = None,
        check_declared: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.route = route
        # Compares a side's declared resources with the broker (bridge.declare.check)
        # before its connects, until the broker could be asked once.
        self._check_declared = check_declared
        self._declared_checked: set[str] = set()
        self.source = source
        self.sink = sink
        self._endpoints = endpoints  # fresh source and sink for a restart after a failure
        self.mapper = mapper
        self.buffer = buffer
        self.stats = RouteStats()
        self.batch = min(route.spec.max_in_flight, 1000)
        self._stopping = asyncio.Event()
        self._reading = asyncio.Event()  # cleared while an operator paused the route
        self._reading.set()
        self._between_reads = asyncio.Event()  # cleared while a receive() is under way
        self._between_reads.set()
        self._ingest_done = asyncio.Event()
        self._sink_reconnecting = asyncio.Lock()
        self._sink_generation = 0  # bumped on every sink reconnect
        # One back-off per side that outlives a connection: a broker that takes the
        # connection and drops it at once must not be reconnected to in a tight loop.
        self._backoff = {role: Backoff(route.spec.retry) for role in ("source", "sink")}
        self._connected_at = {"source": 0.0, "sink": 0.0}  # time.monotonic() of the connect
        self._log = _RouteLog(log, {"route": route.name})
        self._dead_letter_warnings = DeadLetterWarnings(self._log)
        self.tracing = RouteTracing(route.name)

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
                await self._compare_declared(role)  # warns at once; strict: a PermanentError
                with logs.connect_attempt():  # the one line about a failure is the one below
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
                if self._stopping.is_set() and not isinstance(exc, RetryableError):
                    # Draining, and the sink refused for good: nothing can move, so the
                    # drain ends now instead of at drain_timeout; the buffer keeps the rest.
                    self._log.error(
                        "cannot connect the %s while draining, giving up: %s",
                        role,
                        exc,
                        extra={"event": "drain_gave_up", "connection": endpoint_connection},
                    )
                    return False
                log(
                    "cannot connect the %s, retrying in %.1fs: %s",
                    role,
                    delay,
                    exc,
                    extra={"event": "connect_failed", "connection": endpoint_connection},
                )
                await self._back_off(delay, role)
                continue
            self._connected_at[role] = time.monotonic()
            setattr(self.stats, f"{role}_connected", True)
            if self.stats.state is not RouteState.DRAINING:
                self.stats.state = RouteState.RUNNING
            return True
        return False

    async def _compare_declared(self, role: str) -> None:
        """Compare `role`'s declared resources with its broker, until it could be asked."""
        if self._check_declared is None or role in self._declared_checked:
            return
        if await self._check_declared(role):
            self._declared_checked.add(role)

    @property
    def paused(self) -> bool:
        """Whether an operator paused the route."""
        return not self._reading.is_set()

    async def pause(self) -> None:
        """Stop reading the source; buffered messages still go out.

        Returns once a read under way has returned (at most RECEIVE_TIMEOUT_S, bounded
        by PAUSE_WAIT_S), so nothing is read from the source after it. The source stays
        connected and holds what it did not hand out un-acked (its prefetch or credit
        window): nothing is lost, and the broker keeps the rest.
        """
        self._reading.clear()
        self.stats.paused = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._between_reads.wait(), PAUSE_WAIT_S)

    def resume(self) -> None:
        """Read the source again."""
        self._reading.set()
        self.stats.paused = False

    async def _receive(self) -> Sequence[Incoming]:
        """The source's next batch, after waiting while the route is paused ([] once stopping)."""
        while self.paused and not self._stopping.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (self._reading, self._stopping)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if self._stopping.is_set():
            return []
        self._between_reads.clear()
        try:
            return await self.source.receive(self.batch, RECEIVE_TIMEOUT_S)
        finally:
            self._between_reads.set()

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
        await self._back_off(delay, role)
        return await self._connect(endpoint, role)

    async def _back_off(self, seconds: float, role: str) -> None:
        """A back-off delay, cut short by `stop()`; while draining only the sink waits,
        and only while buffered messages are left for it."""
        if not self._stopping.is_set():
            await self._sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while role == "sink" and self._work_left() and time.monotonic() < deadline:
            await asyncio.sleep(min(DRAIN_POLL_S, max(deadline - time.monotonic(), 0.0)))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the route is stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

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

    def _count_delivered(self, envelopes: Sequence[Envelope]) -> None:
        now = time.time()
        stats = self.stats
        stats.delivered += len(envelopes)
        for envelope in envelopes:
            stats.delivered_bytes += len(envelope.payload)
            stats.latency.observe(max(now - envelope.timestamp, 0.0))


class _RouteLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds the route's name to every record, merged with the call's own `extra` fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
