"""The bridge process: every route of a config, started together and drained together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from natsbridge.bridge.admin.server import AdminServer
from natsbridge.bridge.config.loader import Config, Route
from natsbridge.bridge.config.model import Delivery
from natsbridge.bridge.connector import Sink, Source
from natsbridge.bridge.errors import StoreError
from natsbridge.bridge.migrate.metrics import MigrationCollector
from natsbridge.bridge.registry import load_connector
from natsbridge.bridge.runtime.buffer import RouteBuffer
from natsbridge.bridge.runtime.embedded import EmbeddedBuffers
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.route import RouteRunner

log = logging.getLogger("natsbridge")

SAMPLE_INTERVAL_S = 1.0
IDLE_CHECK_S = 1.0
IDLE_ROUNDS_FOR_ONCE = 4  # --once stops after this many idle checks in a row


class Bridge:
    """Runs all routes of `config` until stopped, then drains them within the grace period."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.buffers = EmbeddedBuffers(config.bridge.data_dir, config.bridge.buffer)
        self.runners: list[RouteRunner] = []
        self.admin: AdminServer | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask every route to stop reading and drain (idempotent, signal-safe)."""
        self._stop.set()

    async def run(self, once: bool = False) -> None:
        """Start every route, wait for `stop()` (or idleness with `once`), then drain."""
        await self.buffers.open()
        sampler: asyncio.Task[None] | None = None
        try:
            for route in self.config.routes:
                self.runners.append(await self._build(route))
                await _sample_backlog(self.runners[-1])  # right from the start, after a restart
            if self.config.bridge.admin.enabled:
                self.admin = AdminServer(self.config.bridge.admin, self.runners)
                self.admin.registry.register(MigrationCollector(lambda: self.config))
                self.admin.start()
            sampler = asyncio.create_task(self._sample())
            tasks = [asyncio.create_task(r.run(), name=r.route.name) for r in self.runners]
            log.info(
                "bridge %s started with %d routes",
                self.config.bridge.id,
                len(tasks),
                extra={"event": "started"},
            )
            waiter = asyncio.create_task(self._idle() if once else self._stop.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for runner in self.runners:
                runner.stop()
            _, late = await asyncio.wait(tasks, timeout=self.config.bridge.drain_timeout)
            for task in late:
                log.warning(
                    "route %s did not drain within %gs; its buffer keeps the rest",
                    task.get_name(),
                    self.config.bridge.drain_timeout,
                    extra={"event": "drain_timeout", "route": task.get_name()},
                )
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            if sampler is not None:
                sampler.cancel()
            if self.admin is not None:
                self.admin.close()
            await self.buffers.close()

    async def _build(self, route: Route) -> RouteRunner:
        connections = self.config.connections

        def endpoints() -> tuple[Source, Sink]:
            source = load_connector(route.source_kind).source(
                route, connections[route.source.connection], self.config.bridge
            )
            sink = load_connector(route.sink_kind).sink(
                route, connections[route.sink.connection], self.config.bridge
            )
            return source, sink

        source, sink = endpoints()
        mapper = RouteMapper(route, self.config.bridge, connections[route.sink.connection])
        buffer: RouteBuffer | None = None
        if route.spec.delivery is not Delivery.AT_MOST_ONCE and route.spec.request_reply is None:
            buffer = await self.buffers.route(route)
        return RouteRunner(route, source, sink, mapper, buffer, endpoints)

    async def _sample(self) -> None:
        """Refresh every route's buffer backlog and rates, about once a second."""
        loop = asyncio.get_running_loop()
        while True:
            for runner in self.runners:
                await _sample_backlog(runner)
                runner.stats.sample(loop.time())
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    async def _idle(self) -> None:
        """Return once no route has moved a message for a while and every buffer is empty."""
        idle_rounds, last = 0, None
        while idle_rounds < IDLE_ROUNDS_FOR_ONCE:
            await asyncio.sleep(IDLE_CHECK_S)
            counts = [(r.stats.received, r.stats.delivered) for r in self.runners]
            depth = sum(r.stats.buffer_depth for r in self.runners)
            idle_rounds = idle_rounds + 1 if counts == last and depth == 0 else 0
            last = counts


async def _sample_backlog(runner: RouteRunner) -> None:
    """Read the route's backlog into its gauges; kept as they were while the buffer fails.

    A failing buffer commits nothing, so what it held when last read is what it holds.
    """
    if runner.buffer is None:
        return
    try:
        backlog = await runner.buffer.backlog()
    except StoreError:
        return
    runner.stats.buffer_depth = backlog.depth
    runner.stats.buffer_oldest_age = backlog.oldest_age


def install_signal_handlers(bridge: Bridge) -> None:
    """SIGTERM and SIGINT start a graceful drain."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, bridge.stop)
