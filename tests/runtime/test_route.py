"""RouteRunner's buffered delivery against in-memory fakes (pure logic, no broker).

The pipelined deliver loop must keep its promises whatever the sink answers: every
message delivered once, at most `max_in_flight` in flight, the source's order kept
without failures and disturbed only within `max_in_flight` by a retry, refused messages
dead-lettered while the rest flow, and everything delivered before `run()` returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from natsbridge.bridge.config import load_config
from natsbridge.bridge.connector import Incoming
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost, HeaderError, MessageRejected
from natsbridge.bridge.runtime.buffer import Backlog, Buffered
from natsbridge.bridge.runtime.mapper import RouteMapper
from natsbridge.bridge.runtime.route import RouteRunner
from natsbridge.connectors.amqp.kind import AmqpOrigin as Origin

COUNT = 200


class MemorySource:
    """Hands out `count` messages with payloads b"0", b"1", ... and records the acks."""

    def __init__(self, count: int) -> None:
        self.waiting = [Envelope("in.x", str(n).encode()) for n in range(count)]
        self.acked = 0

    async def connect(self) -> None:
        pass

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        if not self.waiting:
            await asyncio.sleep(min(timeout, 0.01))
            return []
        batch, self.waiting = self.waiting[:max_messages], self.waiting[max_messages:]
        return [Incoming(envelope, self._ack) for envelope in batch]

    def _ack(self, error: BaseException | None = None) -> None:
        assert error is None
        self.acked += 1

    async def close(self) -> None:
        pass


class MemoryBuffer:
    """The RouteBuffer protocol in memory: a take waits a little, like a commit would."""

    def __init__(self) -> None:
        self.stored: list[Buffered] = []
        self.settled: set[int] = set()
        self.dead: list[tuple[bytes, str]] = []
        self.last_seq = 0

    async def put(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self.last_seq += 1  # never reused, however much was taken meanwhile
            self.stored.append(Buffered(self.last_seq, envelope, 1))

    async def take(self, max_messages: int, timeout: float) -> Sequence[Buffered]:
        await asyncio.sleep(0.001)
        taken, self.stored = self.stored[:max_messages], self.stored[max_messages:]
        return taken

    async def settle(self, seqs: Sequence[int]) -> None:
        assert not self.settled.intersection(seqs), "settled twice"
        self.settled.update(seqs)

    async def dead_letter(self, envelope: Envelope, reason: str, seq: int | None = None) -> None:
        self.dead.append((envelope.payload, reason))

    async def backlog(self) -> Backlog:
        return Backlog(len(self.stored), None)


class ScriptedSink:
    """Confirms after a short delay; fails the payloads in `fail` as told, once each."""

    def __init__(self, fail: dict[bytes, BaseException]) -> None:
        self.fail = dict(fail)
        self.delivered: list[bytes] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        self.in_flight += len(envelopes)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            results = [self.fail.pop(envelope.payload, None) for envelope in envelopes]
            self.delivered.extend(
                e.payload for e, result in zip(envelopes, results, strict=True) if result is None
            )
            return results
        finally:
            self.in_flight -= len(envelopes)

    async def close(self) -> None:
        pass


def make_runner(
    tmp_path: Path,
    max_in_flight: int,
    source: Any,
    sink: Any,
    retry: str = "{initial: 1ms, max: 2ms}",
) -> tuple[MemoryBuffer, RouteRunner]:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections: {nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}}\n"
        "routes:\n"
        "  - {name: r, from: {connection: nats, subject: 'in.>'},\n"
        "     to: {connection: nats, subject: out},\n"
        f"     max_in_flight: {max_in_flight}, retry: {retry}}}\n"
    )
    config = load_config(path, {})
    [route] = config.routes
    buffer = MemoryBuffer()
    mapper = RouteMapper(route, config.bridge, config.connections["nats"])
    return buffer, RouteRunner(route, source, sink, mapper, buffer)


def run_route(
    tmp_path: Path,
    max_in_flight: int,
    fail: dict[bytes, BaseException],
    sink: Any = None,
    retry: str = "{initial: 1ms, max: 2ms}",
) -> tuple[MemorySource, MemoryBuffer, Any, RouteRunner]:
    source = MemorySource(COUNT)
    sink = ScriptedSink(fail) if sink is None else sink
    buffer, runner = make_runner(tmp_path, max_in_flight, source, sink, retry)

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        while len(buffer.settled) + len(buffer.dead) < COUNT:
            await asyncio.sleep(0.005)
        runner.stop()
        await asyncio.wait_for(running, 10)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    return source, buffer, sink, runner


def sent_order(n: int) -> bytes:
    return str(n).encode()


@pytest.mark.parametrize("max_in_flight", [1, 3, 8])
def test_without_failures_every_message_goes_once_in_order_within_the_bound(
    tmp_path: Path, max_in_flight: int
) -> None:
    source, buffer, sink, runner = run_route(tmp_path, max_in_flight, {})
    assert sink.delivered == [sent_order(n) for n in range(COUNT)]
    assert sink.most_in_flight <= max_in_flight
    assert source.acked == COUNT and len(buffer.settled) == COUNT
    assert runner.stats.delivered == COUNT and runner.stats.in_flight == 0


def test_retries_reorder_only_within_max_in_flight_and_lose_nothing(tmp_path: Path) -> None:
    max_in_flight = 8
    fail: dict[bytes, BaseException] = {
        sent_order(n): ConnectionLost("gone") for n in (5, 6, 40, 41, 42, 199)
    }
    _, buffer, sink, runner = run_route(tmp_path, max_in_flight, fail)
    assert sorted(sink.delivered, key=int) == [sent_order(n) for n in range(COUNT)]
    for position, payload in enumerate(sink.delivered):
        assert abs(position - int(payload)) < max_in_flight
    assert sink.most_in_flight <= max_in_flight
    assert sink.connects >= 2  # ConnectionLost: the sink was reconnected
    assert runner.stats.retries >= 6 and runner.stats.in_flight == 0
    assert len(buffer.settled) == COUNT and not buffer.dead


def test_a_refused_message_is_dead_lettered_and_the_rest_flow_in_order(tmp_path: Path) -> None:
    fail: dict[bytes, BaseException] = {sent_order(17): MessageRejected("no such queue")}
    _, buffer, sink, runner = run_route(tmp_path, 4, fail)
    assert buffer.dead == [(sent_order(17), "MessageRejected: no such queue")]
    assert sink.delivered == [sent_order(n) for n in range(COUNT) if n != 17]
    assert runner.stats.in_flight == 0


class HostileSource(MemorySource):
    """Like MemorySource; message 3 could not be converted, message 5 breaks the mapper."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        origin = Origin("rabbit", "amqp", exchange="x", routing_key="\udcff.k", queue="q")
        for envelope in self.waiting:
            envelope.origin = origin

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        batch = await super().receive(max_messages, timeout)
        return [
            Incoming(
                i.envelope, i.ack, HeaderError("table key") if i.envelope.payload == b"3" else None
            )
            for i in batch
        ]


class BreakingMapper:
    """Maps like RouteMapper, but raises a TypeError (a bug, not a PermanentError) on b"5"."""

    def __init__(self, mapper: RouteMapper) -> None:
        self.mapper = mapper

    def map(self, envelope: Envelope) -> Envelope:
        if envelope.payload == b"5":
            raise TypeError("a bytes-like object is required, not 'str'")
        return self.mapper.map(envelope)


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
def test_one_bad_message_is_dead_lettered_logged_and_acked_and_the_rest_flow(
    tmp_path: Path, delivery: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        "version: 1\n"
        "bridge: {id: b}\n"
        "connections: {nats: {kind: nats, servers: ['nats://127.0.0.1:4222']}}\n"
        "routes:\n"
        "  - {name: r, from: {connection: nats, subject: 'in.>'},\n"
        f"     to: {{connection: nats, subject: out}}, delivery: {delivery}}}\n"
    )
    config = load_config(path, {})
    [route] = config.routes
    count = 10
    source, sink = HostileSource(count), ScriptedSink({})
    buffer = MemoryBuffer() if delivery == "at_least_once" else None
    mapper = BreakingMapper(RouteMapper(route, config.bridge, config.connections["nats"]))
    runner = RouteRunner(route, source, sink, mapper, buffer)  # type: ignore[arg-type]

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        while (
            runner.stats.delivered + runner.stats.dropped + len(buffer.dead if buffer else [])
            < count
        ):
            assert not running.done(), running.result()
            await asyncio.sleep(0.005)
        runner.stop()
        await asyncio.wait_for(running, 10)

    with caplog.at_level(logging.WARNING, "natsbridge.route"):
        asyncio.run(scenario())
    assert sink.delivered == [str(n).encode() for n in range(count) if n not in (3, 5)]
    assert source.acked == count
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    # Dead letters: one line for the first, the second counted (within 10 s) and summed
    # up at the stop; drops (at_most_once): one line each.
    for text in warnings[: 1 if buffer is not None else 2]:
        assert "amqp connection 'rabbit'" in text and "routing_key '\\udcff.k'" in text
        assert "queue 'q'" in text
    if buffer is not None:
        assert buffer.dead == [
            (b"3", "HeaderError: table key"),
            (b"5", "TypeError: a bytes-like object is required, not 'str'"),
        ]
        assert runner.stats.dead_lettered == {"HeaderError": 1, "TypeError": 1}
        assert "HeaderError" in warnings[0] and "dead-lettered" in warnings[0]
        assert warnings[1].startswith("... and 1 more dead-lettered in 10 s")
    else:
        assert runner.stats.dropped == 2


# ---------------------------------------------------------------- reconnects and poison


class DroppingSource(MemorySource):
    """Connects fine, then every receive finds the connection gone."""

    def __init__(self) -> None:
        super().__init__(0)
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        raise ConnectionLost("dropped at once")


class DroppingSink(ScriptedSink):
    """A destination that drops the connection at messages in `poison` (or at every send
    when `poison` is None): the messages before it in a send are confirmed, it and all
    after it fail with ConnectionLost until the next connect."""

    def __init__(self, poison: set[bytes] | None) -> None:
        super().__init__({})
        self.poison = poison
        self.connected = False
        self.refuse_connects = 0  # connects that fail, as while a broker restarts
        self.sends = 0

    async def connect(self) -> None:
        self.connects += 1
        if self.refuse_connects > 0:
            self.refuse_connects -= 1
            raise ConnectionLost("connection refused")
        self.connected = True

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        self.sends += 1
        await asyncio.sleep(0.001)
        results: list[BaseException | None] = []
        for envelope in envelopes:
            if self.poison is None or envelope.payload in self.poison:
                self.connected = False
            if not self.connected:
                results.append(ConnectionLost("connection reset by the broker"))
                continue
            self.delivered.append(envelope.payload)
            results.append(None)
        return results


def reconnects_in_half_a_second(tmp_path: Path, source: Any, sink: Any) -> None:
    _, runner = make_runner(tmp_path, 8, source, sink, "{initial: 10ms, max: 100ms}")

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        await asyncio.sleep(0.5)
        runner.stop()
        await asyncio.wait_for(running, 10)

    asyncio.run(scenario())


# Back-off delays of at least 5, 10, 20, 40, 50, 50 ... ms: at most 13 reconnects fit in
# half a second, however fast the machine; without back-off they were thousands.
MOST_RECONNECTS = 20


def test_a_source_that_drops_every_connection_at_once_is_reconnected_with_back_off(
    tmp_path: Path,
) -> None:
    source = DroppingSource()
    reconnects_in_half_a_second(tmp_path, source, ScriptedSink({}))
    assert 2 <= source.connects <= MOST_RECONNECTS


def test_a_sink_that_drops_every_connection_at_once_is_reconnected_with_back_off(
    tmp_path: Path,
) -> None:
    source, sink = MemorySource(COUNT), DroppingSink(poison=None)
    reconnects_in_half_a_second(tmp_path, source, sink)
    assert 2 <= sink.connects <= MOST_RECONNECTS
    assert not sink.delivered


def test_a_message_that_drops_the_connection_is_dead_lettered_as_poison(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = DroppingSink(poison={sent_order(17)})
    with caplog.at_level(logging.WARNING, "natsbridge.route"):
        _, buffer, _, runner = run_route(tmp_path, 8, {}, sink)
    [(payload, reason)] = buffer.dead
    assert payload == sent_order(17)
    assert reason.startswith("poison: lost the connection all 3 times it was sent alone")
    # The messages behind it flow again, in order, each once.
    assert sink.delivered == [sent_order(n) for n in range(COUNT) if n != 17]
    assert runner.stats.dead_lettered == {"poison": 1}
    assert runner.stats.in_flight == 0
    # The first loss, three sent alone, one after the dead-letter: no storm.
    assert sink.connects == 1 + 1 + 3
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "dead_lettered"]
    assert line.levelno == logging.WARNING
    assert line.route == "r"  # type: ignore[attr-defined]
    assert "buffer seq 18" in line.getMessage()
    assert "Bridge-Origin 'b/nats'" in line.getMessage()


def test_poison_after_is_the_number_of_losses_a_message_may_cause(tmp_path: Path) -> None:
    sink = DroppingSink(poison={sent_order(0), sent_order(199)})
    _, buffer, _, runner = run_route(tmp_path, 1, {}, sink, "{initial: 1ms, poison_after: 5}")
    assert sorted(payload for payload, _ in buffer.dead) == [sent_order(0), sent_order(199)]
    assert all("all 5 times" in reason for _, reason in buffer.dead)
    assert runner.stats.dead_lettered == {"poison": 2}
    assert sink.delivered == [sent_order(n) for n in range(1, COUNT - 1)]


class RestartingSink(DroppingSink):
    """A broker that goes down at every fifth send of a window and every other send of one
    message alone, and refuses the next three connects each time: no message is to blame."""

    def __init__(self) -> None:
        super().__init__(poison=set())
        self.alone = 0  # sends of one message
        self.dropped_alone = 0  # of them, those the broker went down under

    async def send_batch(self, envelopes: Sequence[Envelope]) -> list[BaseException | None]:
        self.alone += len(envelopes) == 1
        down = self.alone % 2 == 1 if len(envelopes) == 1 else self.sends % 5 == 4
        if down and self.connected:
            self.connected = False
            self.refuse_connects = 3
            self.dropped_alone += len(envelopes) == 1
        return await super().send_batch(envelopes)


def test_a_broker_that_restarts_again_and_again_dead_letters_nothing(tmp_path: Path) -> None:
    sink = RestartingSink()
    _, buffer, _, runner = run_route(tmp_path, 8, {}, sink)
    assert not buffer.dead
    assert sorted(set(sink.delivered), key=int) == [sent_order(n) for n in range(COUNT)]
    assert len(buffer.settled) == COUNT and runner.stats.in_flight == 0
    assert sink.dropped_alone >= 3  # losses while sending alone, spread over messages


# ---------------------------------------------------------------- the last boundary


class DyingSource(MemorySource):
    """Its client library fails once with something no connector translated (a bug)."""

    def __init__(self, count: int, die_after: int) -> None:
        super().__init__(count)
        self.die_after = die_after
        self.handed = 0

    async def receive(self, max_messages: int, timeout: float) -> Sequence[Incoming]:
        if self.handed >= self.die_after:
            self.die_after = COUNT + 1  # once
            raise RuntimeError("the client's thread died")
        batch = await super().receive(min(max_messages, 10), timeout)
        self.handed += len(batch)
        return batch


def test_an_uncaught_failure_restarts_the_route_on_new_endpoints_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, sink = DyingSource(COUNT, die_after=50), ScriptedSink({})
    buffer, built = make_runner(tmp_path, 8, source, sink)
    rebuilt: list[int] = []

    def endpoints() -> tuple[Any, Any]:
        rebuilt.append(1)
        return source, sink  # the same objects stand in for new ones: they hold the state

    runner = RouteRunner(built.route, source, sink, built.mapper, buffer, endpoints)

    async def scenario() -> None:
        running = asyncio.create_task(runner.run())
        while len(buffer.settled) < COUNT:
            assert not running.done(), "run() ended: the failure escaped the route"
            await asyncio.sleep(0.005)
        runner.stop()
        await asyncio.wait_for(running, 10)

    with caplog.at_level(logging.ERROR, logger="natsbridge.route"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sink.delivered == [sent_order(n) for n in range(COUNT)]
    assert rebuilt == [1]
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == "route_failed"]
    assert "RuntimeError: the client's thread died" in failed.getMessage()
    assert failed.exc_info is not None
    assert runner.stats.last_error is not None
