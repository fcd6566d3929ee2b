"""The bridge process: every route of a config, started together and drained together.

SIGHUP or `POST /api/reload` reads the config again and applies it to the running
routes (bridge.runtime.reload says what changes what); `pause` and `resume` stop and
restart one route's reading from its source. Both arrive on the admin server's threads
or in a signal handler and run on the event loop, one reload at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from natsbridge.bridge import declare, tracing
from natsbridge.bridge.admin.server import AdminServer, ControlError
from natsbridge.bridge.config.loader import Config, Route, load_config
from natsbridge.bridge.config.model import BufferMode, Delivery
from natsbridge.bridge.connector import Sink, Source
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import BridgeError, ConfigError, NotFound, StoreError
from natsbridge.bridge.logs import plural
from natsbridge.bridge.migrate.metrics import MigrationCollector
from natsbridge.bridge.registry import did_you_mean, load_connector
from natsbridge.bridge.runtime.at_source import AtSourceBuffer
from natsbridge.bridge.runtime.buffer import RouteBuffer
from natsbridge.bridge.runtime.buffers import RouteBuffers
from natsbridge.bridge.runtime.dead_letter_admin import DeadLetterAdmin
from natsbridge.bridge.runtime.dead_letter_destination import DestinationDeadLetters
from natsbridge.bridge.runtime.dead_letter_replay import replay_destination, replay_reader
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.reload import RouteDiff, diff_routes, fixed_setting_problems
from natsbridge.bridge.runtime.route import RouteRunner

log = logging.getLogger("natsbridge")

SAMPLE_INTERVAL_S = 1.0
IDLE_CHECK_S = 1.0
IDLE_ROUNDS_FOR_ONCE = 4  # --once stops after this many idle checks in a row
CONTROL_MARGIN_S = 60.0  # an admin call waits for a reload's drains plus this much
DRAIN_REPORT_S = 2.0  # a drain logs its progress this often

Endpoints = Callable[[], tuple[Source, Sink]]


class Bridge:
    """Runs all routes of `config` until stopped, then drains them within the grace period.

    `load` reads the config again for a reload (default: `load_config(config.path)`).
    """

    def __init__(self, config: Config, load: Callable[[], Config] | None = None) -> None:
        self.config = config
        self._load = load or (lambda: load_config(config.path))
        self.buffers = RouteBuffers(config)
        self.runners: list[RouteRunner] = []  # in config order; replaced whole on reload
        self.admin: AdminServer | None = None
        self._stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._route_buffers: dict[str, RouteBuffer] = {}
        self._reloading = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None  # a route task that ended by itself
        self._signalled: set[asyncio.Task[Any]] = set()

    def stop(self) -> None:
        """Ask every route to stop reading and drain (idempotent, signal-safe)."""
        self._stop.set()

    async def run(self, once: bool = False) -> None:
        """Start every route, wait for `stop()` (or idleness with `once`), then drain."""
        self._loop = asyncio.get_running_loop()
        sampler: asyncio.Task[None] | None = None
        stop_tracing = tracing.start(self.config.bridge.tracing)
        try:
            for route in self.config.routes:
                runner = await self._runner(route, self._endpoints(route, self.config))
                self.runners.append(runner)
                await _sample_backlog(runner)  # right from the start, after a restart
            if self.config.bridge.admin.enabled:
                self.admin = AdminServer(self.config.bridge.admin, self.runners, self)
                self.admin.registry.register(MigrationCollector(lambda: self.config))
                self.admin.start()
            sampler = asyncio.create_task(self._sample())
            for runner in self.runners:
                self._start(runner)
            log.info(
                "bridge %s started with %s",
                self.config.bridge.id,
                plural(len(self.runners), "route"),
                extra={"event": "started"},
            )
            waiters: list[asyncio.Task[Any]] = [asyncio.create_task(self._stop.wait())]
            if once:
                waiters.append(asyncio.create_task(self._idle()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            self._stop.set()  # no reload starts from here on
            async with self._reloading:  # one under way finishes first
                await self._stop_routes(self.runners)
            if self._failure is not None:
                raise self._failure
        finally:
            if sampler is not None:
                sampler.cancel()
            if self.admin is not None:
                self.admin.close()
            await self.buffers.close()
            stop_tracing()

    # ------------------------------------------------------------ routes

    def _endpoints(self, route: Route, config: Config) -> Endpoints:
        """What builds a fresh source and sink of `route` (raises BridgeError: no driver)."""
        connections = config.connections

        def endpoints() -> tuple[Source, Sink]:
            source = load_connector(route.source_kind).source(
                route, connections[route.source.connection], config.bridge
            )
            sink = load_connector(route.sink_kind).sink(
                route, connections[route.sink.connection], config.bridge
            )
            return source, sink

        return endpoints

    async def _runner(self, route: Route, endpoints: Endpoints) -> RouteRunner:
        source, sink = endpoints()
        connection = self.config.connections[route.sink.connection]
        mapper = RouteMapper(route, self.config.bridge, connection)
        buffer: RouteBuffer | None = None
        if route.spec.delivery is not Delivery.AT_MOST_ONCE and route.spec.request_reply is None:
            stored = await self.buffers.route(route)
            if route.buffer.mode is BufferMode.NONE and not await _left_over(route, stored):
                # No copy of the flow; the embedded stream keeps only dead letters.
                buffer = AtSourceBuffer(2 * route.spec.max_in_flight, stored)
            else:
                buffer = self._route_buffers[route.name] = stored
            if route.dead_letters is not None:
                buffer = self._dead_letters(route, buffer)
        config = self.config

        async def check_declared(role: str) -> bool:
            return await declare.check(route, "from" if role == "source" else "to", config)

        return RouteRunner(route, source, sink, mapper, buffer, endpoints, check_declared)

    def _dead_letters(self, route: Route, buffer: RouteBuffer) -> DestinationDeadLetters:
        """`buffer` with its dead letters going to `route.dead_letters` (a sink of its kind)."""
        target = route.dead_letters
        assert target is not None
        connection = self.config.connections[target.sink.connection]
        kind = load_connector(target.sink_kind)
        bridge = self.config.bridge
        return DestinationDeadLetters(buffer, route, lambda: kind.sink(target, connection, bridge))

    def _start(self, runner: RouteRunner) -> None:
        runner.stats.started_at = time.time()
        task = asyncio.create_task(runner.run(), name=runner.route.name)
        self._tasks[runner.route.name] = task
        task.add_done_callback(self._route_ended)

    def _route_ended(self, task: asyncio.Task[None]) -> None:
        """A route task that ends while nobody stopped it stops the bridge (as it always did)."""
        if self._tasks.get(task.get_name()) is not task:
            return  # stopped on purpose (reload or shutdown)
        if not task.cancelled() and task.exception() is not None:
            self._failure = self._failure or task.exception()
        self.stop()

    async def _stop_routes(self, runners: Iterable[RouteRunner]) -> None:
        """Stop `runners` and wait for their drain, up to `drain_timeout`.

        What a route had taken from its buffer and not settled is handed back at once,
        so that the route started in its place (a reload) delivers it without waiting
        for the buffer's ack wait.
        """
        runners = list(runners)
        tasks = [self._tasks.pop(runner.route.name) for runner in runners]
        for runner in runners:
            runner.stop()
        if not tasks:
            return
        timeout = self.config.bridge.drain_timeout
        progress = DrainProgress(runners)
        progress.report("draining %s (up to %gs): %s", plural(len(runners), "route"), timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        late = set(tasks)
        while late and loop.time() < deadline:
            wait = min(DRAIN_REPORT_S, deadline - loop.time())
            _, late = await asyncio.wait(late, timeout=wait)
            if late and loop.time() < deadline:
                progress.report("still draining %s: %s", plural(len(late), "route"))
        for task in late:
            log.warning(
                "route %s did not drain within %gs; its buffer keeps the rest",
                task.get_name(),
                timeout,
                extra={"event": "drain_timeout", "route": task.get_name()},
            )
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await _sample_backlog(runner)  # what stays in the buffer, for the last report
        progress.report("drained %s: %s", plural(len(runners), "route"), event="drained")
        for runner in runners:
            buffer = self._route_buffers.pop(runner.route.name, None)
            if buffer is not None:
                buffer.release()
            if isinstance(runner.buffer, DestinationDeadLetters):
                await runner.buffer.close()
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                self._failure = self._failure or task.exception()

    def _find(self, name: str) -> RouteRunner:
        runners = {runner.route.name: runner for runner in self.runners}
        runner = runners.get(name)
        if runner is None:
            raise ControlError(404, f"no route named {name!r}{did_you_mean(name, runners)}")
        return runner

    # ------------------------------------------------------------ reload, pause, resume

    async def reload(self, trigger: str) -> dict[str, Any]:
        """Read the config again and apply it; nothing changes when it is invalid.

        Returns what happened to each route (`added`, `removed`, `restarted`,
        `unchanged`); raises ControlError (422 with every problem, positioned) for an
        invalid config, 503 while the bridge stops.
        """
        async with self._reloading:
            if self._stop.is_set():
                raise ControlError(503, "the bridge is stopping")
            try:
                new = await asyncio.to_thread(self._load)
                problems = fixed_setting_problems(self.config, new)
                if problems:
                    raise ConfigError(problems)
                diff = diff_routes(self.config, new)
                routes = {route.name: route for route in new.routes}
                # Built before anything stops: a missing driver refuses the whole reload.
                endpoints = {
                    name: self._endpoints(routes[name], new) for name in diff.added + diff.changed
                }
                for build in endpoints.values():
                    build()
            except BridgeError as exc:
                problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
                log.error(
                    "reload (%s) refused, the running config stays: %s",
                    trigger,
                    "; ".join(problems),
                    extra={"event": "reload_refused"},
                )
                raise ControlError(
                    422, "config refused; the running config stays", problems
                ) from None
            failed = await self._apply(new, diff, routes, endpoints)
            outcome: dict[str, Any] = {
                "added": diff.added,
                "removed": diff.removed,
                "restarted": diff.changed,
                "unchanged": diff.unchanged,
                "failed": failed,
            }
            log.info(
                "reloaded (%s): %d added, %d removed, %d restarted, %d unchanged, %d failed",
                trigger,
                *(len(names) for names in outcome.values()),
                extra={"event": "reloaded", **outcome},
            )
            return outcome

    async def _apply(
        self,
        new: Config,
        diff: RouteDiff,
        routes: dict[str, Route],
        endpoints: dict[str, Endpoints],
    ) -> dict[str, str]:
        """Stop the removed and changed routes, start the added and changed ones.

        Returns the routes that could not start (their buffer failed), with the reason;
        they are left out of the running config, so that the next reload adds them.
        """
        old = {runner.route.name: runner for runner in self.runners}
        paused = {name for name, runner in old.items() if runner.paused}
        await self._stop_routes(old[name] for name in diff.removed + diff.changed)
        self.config = self.buffers.config = new
        running = {name: old[name] for name in diff.unchanged}
        failed: dict[str, str] = {}
        for name in diff.added + diff.changed:
            try:
                runner = await self._runner(routes[name], endpoints[name])
            except BridgeError as exc:
                failed[name] = str(exc)
                log.error("route %s cannot start: %s", name, exc, extra={"event": "route_failed"})
                continue
            if name in paused:
                await runner.pause()  # not started yet: returns at once
            running[name] = runner
            self._start(runner)
        if failed:
            self.config = replace(new, routes=[r for r in new.routes if r.name not in failed])
        self.runners = [running[route.name] for route in self.config.routes]
        if self.admin is not None:
            self.admin.runners = self.runners
        return failed

    async def pause(self, name: str) -> dict[str, Any]:
        """Stop reading route `name`'s source; what it holds is still delivered."""
        await self._find(name).pause()
        log.info("route %s paused", name, extra={"event": "paused", "route": name})
        return {"route": name, "paused": True}

    async def resume(self, name: str) -> dict[str, Any]:
        """Read route `name`'s source again."""
        self._find(name).resume()
        log.info("route %s resumed", name, extra={"event": "resumed", "route": name})
        return {"route": name, "paused": False}

    async def dead_letters(self, request: str) -> dict[str, Any]:
        """A `natsbridge dlq` operation (JSON `request`) on the running buffer."""
        asked = json.loads(request)
        try:
            if asked.get("destination"):
                runner = self._find(asked["stream"])
                try:
                    reader = replay_reader(runner.route, self.config)
                except BridgeError as exc:  # no destination, or one that keeps nothing
                    raise ControlError(422, str(exc)) from None
                return await replay_destination(runner, reader, asked["limit"])
            broker = self.buffers.embedded_broker()
            if broker is None:
                raise ControlError(
                    422,
                    "no route of this bridge buffers in the data dir: a jetstream buffer's "
                    "dead letters are in its stream's companion `<stream>~dead-letters`",
                )
            return await DeadLetterAdmin(broker, self._remap).run(asked)
        except NotFound as exc:
            raise ControlError(404, str(exc)) from None

    async def _remap(self, route: str, envelope: Envelope) -> None:
        """Map an intake dead letter again with route `route`'s mapping, and buffer it."""
        runner = self._find(route)
        if runner.buffer is None:
            raise BridgeError(f"route {route!r} has no buffer now (at_most_once)")
        await runner.buffer.put([runner.mapper.map(envelope)])

    def call(self, action: str, argument: str) -> dict[str, Any]:
        """From another thread (the admin server): run `action` on the loop, wait for it."""
        method = {
            "reload": self.reload,
            "pause": self.pause,
            "resume": self.resume,
            "dlq": self.dead_letters,
        }[action]
        try:
            assert self._loop is not None, "run() first"
            future: Future[dict[str, Any]] = asyncio.run_coroutine_threadsafe(
                method(argument), self._loop
            )
        except RuntimeError:  # the loop closed: the process is on its way out
            raise ControlError(503, "the bridge is stopping") from None
        try:
            return future.result(timeout=2 * self.config.bridge.drain_timeout + CONTROL_MARGIN_S)
        except TimeoutError:
            raise ControlError(504, f"{action} still under way; see the log") from None

    def reload_on_signal(self) -> None:
        """SIGHUP: reload in the background; the outcome goes to the log."""

        async def reload() -> None:
            try:
                await self.reload("SIGHUP")
            except ControlError:
                pass  # refusals were logged
            except Exception:  # a bug must not end as "Task exception was never retrieved"
                log.exception("reload (SIGHUP) failed", extra={"event": "reload_failed"})

        task = asyncio.create_task(reload())
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    # ------------------------------------------------------------ sampling

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
    runner.stats.buffer_bytes = backlog.bytes


class DrainProgress:
    """The drain's log lines: per route, what was delivered since it began and what is left."""

    def __init__(self, runners: list[RouteRunner]) -> None:
        self.runners = runners
        self.delivered_before = {id(runner): runner.stats.delivered for runner in runners}

    def report(self, message: str, *args: object, event: str = "draining") -> None:
        """Log `message` % (*args, the counts), with the counts as fields too."""
        counts = {
            runner.route.name: {
                "delivered": runner.stats.delivered - self.delivered_before[id(runner)],
                "left": runner.stats.buffer_depth,
            }
            for runner in self.runners
        }
        delivered = sum(count["delivered"] for count in counts.values())
        left = sum(count["left"] for count in counts.values())
        summary = f"{delivered} delivered since the drain began, {left} left in the buffer"
        log.info(message, *args, summary, extra={"event": event, "routes": counts})


def install_signal_handlers(bridge: Bridge) -> None:
    """SIGTERM and SIGINT start a graceful drain; SIGHUP reloads the config."""
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        log.info("%s: stopping", signum.name, extra={"event": "signal", "signal": signum.name})
        bridge.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop, signum)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, bridge.reload_on_signal)


async def _left_over(route: Route, embedded: RouteBuffer) -> bool:
    """Whether a `buffer: none` route's embedded buffer still holds messages of an earlier
    run (the route had another mode): they go out through it first, never stranded."""
    depth = (await embedded.backlog()).depth
    if depth:
        log.warning(
            "route %s: %s in its embedded buffer from an earlier run go out through it; "
            "buffer none applies from the first start that finds it empty",
            route.name,
            plural(depth, "message"),
            extra={"event": "buffer_left_over", "route": route.name},
        )
    return depth > 0
