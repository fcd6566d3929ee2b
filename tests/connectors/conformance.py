"""One conformance suite for every connector: the same guarantees, proven on each real broker.

A connector's test module subclasses `SourceConformance` and/or `SinkConformance` and
implements the few hooks that know its broker (how to produce into the source's address
with the raw client, how to read what the sink wrote). Each hook uses a fresh, unique
address per test, so reruns never see old messages.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import pytest

from natsbridge.bridge.connector import Incoming, Sink, Source, send_one
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.errors import ConnectionLost
from natsbridge.mappings.headers import foreign_header_name, unescape_header_name

T = TypeVar("T")
COUNT = 200


def run(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion in a fresh event loop (tests are plain functions)."""

    async def main() -> T:
        return await coro

    return asyncio.run(main())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def receive_n(source: Source, count: int, timeout: float = 20.0) -> list[Incoming]:
    """Exactly `count` messages from `source` (fails the test on timeout)."""
    received: list[Incoming] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(received) < count:
        remaining = deadline - loop.time()
        assert remaining > 0, f"received {len(received)} of {count} messages"
        received.extend(await source.receive(count - len(received), min(remaining, 1.0)))
    return received


async def receive_nothing(source: Source, wait: float = 1.0) -> None:
    """Assert that `source` delivers nothing within `wait` seconds."""
    extra = await source.receive(10, wait)
    assert not extra, f"unexpected messages: {[m.envelope.payload for m in extra]}"


RESERVED_HEADERS = {
    "Nats-Rollup": "all",
    "Nats-Msg-Id": "dup",
    "Nats-Expected-Stream": "OTHER",
    "Bridge-Buffer-Key": "k",
    "Bridge-Origin": "dc2/legacy",
}
"""Headers a legacy producer may set that must not act on NATS or the bridge."""


class SourceConformance:
    """Guarantees every source keeps. Hooks: `make_source`, `produce`."""

    legacy = True
    """A legacy broker's source: reserved header names are renamed (NATS sources drop
    JetStream publish directives instead, tested with the NATS connector)."""

    def make_source(self, address: str) -> Source:
        """A not-yet-connected source reading `address` (durably where the broker can)."""
        raise NotImplementedError

    def new_address(self) -> str:
        """A fresh address (queue, topic, subject, destination) for one test."""
        return unique("conformance")

    async def produce(
        self, address: str, payloads: Sequence[bytes], headers: dict[str, str]
    ) -> None:
        """Publish `payloads` to `address` with the raw client, durably, in order."""
        raise NotImplementedError

    def test_receives_everything_in_order_with_headers(self) -> None:
        async def scenario() -> None:
            address = self.new_address()
            source = self.make_source(address)
            await source.connect()
            try:
                payloads = [f"msg-{i}".encode() for i in range(COUNT)]
                await self.produce(address, payloads, {"X-Test": "yes: a:b"})
                received = await receive_n(source, COUNT)
                assert [m.envelope.payload for m in received] == payloads
                assert all(m.envelope.header("X-Test") == "yes: a:b" for m in received)
                assert all(m.envelope.origin is not None for m in received)
                for message in received:
                    message.ack(None)
                    message.ack(None)  # settling twice is harmless
                await receive_nothing(source)
            finally:
                await source.close()

        run(scenario())

    def test_reserved_header_names_are_renamed_reversibly(self) -> None:
        if not self.legacy:
            pytest.skip("a NATS source drops JetStream publish directives instead")

        async def scenario() -> None:
            address = self.new_address()
            source = self.make_source(address)
            await source.connect()
            try:
                await self.produce(address, [b"hostile"], RESERVED_HEADERS)
                [message] = await receive_n(source, 1)
                headers = message.envelope.headers
                for name, value in RESERVED_HEADERS.items():
                    renamed = foreign_header_name(name)
                    assert headers.get(renamed) == [value], (name, headers)
                    assert unescape_header_name(renamed) == name
                assert not [n for n in headers if n.startswith("Nats-")], headers
                assert headers["Bridge-Origin"] == ["dc2/legacy"]  # loop prevention keeps it
                message.ack(None)
            finally:
                await source.close()

        run(scenario())

    def test_unacked_messages_come_back_after_reconnect(self) -> None:
        async def scenario() -> None:
            address = self.new_address()
            first = self.make_source(address)
            await first.connect()
            payloads = [f"keep-{i}".encode() for i in range(10)]
            await self.produce(address, payloads, {})
            received = await receive_n(first, 10)
            for message in received[:4]:
                message.ack(None)
            await first.close()  # the other six were never settled
            second = self.make_source(address)
            await second.connect()
            try:
                again = await receive_n(second, 6)
                assert [m.envelope.payload for m in again] == payloads[4:]
                for message in again:
                    message.ack(None)
                await receive_nothing(second)
            finally:
                await second.close()

        run(scenario())

    def test_retryable_nack_redelivers(self) -> None:
        async def scenario() -> None:
            address = self.new_address()
            source = self.make_source(address)
            await source.connect()
            try:
                await self.produce(address, [b"again"], {})
                [message] = await receive_n(source, 1)
                message.ack(ConnectionLost("sink unavailable"))
                [redelivered] = await receive_n(source, 1)
                assert redelivered.envelope.payload == b"again"
                redelivered.ack(None)
                await receive_nothing(source)
            finally:
                await source.close()

        run(scenario())


class SinkConformance:
    """Guarantees every sink keeps. Hooks: `make_sink`, `consume`."""

    def make_sink(self, address: str) -> Sink:
        """A not-yet-connected sink writing to `address`."""
        raise NotImplementedError

    def new_address(self) -> str:
        return unique("conformance")

    async def prepare(self, address: str) -> Any:
        """Make `address` observable before the sink writes (bind a queue, subscribe…)."""
        return None

    async def consume(self, address: str, state: Any, count: int) -> list[Envelope]:
        """Read `count` messages written to `address` with the raw client, in order."""
        raise NotImplementedError

    def envelope(self, address: str, payload: bytes, headers: dict[str, list[str]]) -> Envelope:
        return Envelope(subject=address, payload=payload, headers=headers)

    def test_confirmed_sends_arrive_in_order_with_headers(self) -> None:
        async def scenario() -> None:
            address = self.new_address()
            state = await self.prepare(address)
            sink = self.make_sink(address)
            await sink.connect()
            try:
                payloads = [f"out-{i}".encode() for i in range(COUNT)] + [b"\x00bin\xff\x00"]
                headers = {"X-Test": ["a:b c"], "X-Multi": ["1", "2"]}
                await asyncio.gather(
                    *(send_one(sink, self.envelope(address, p, headers)) for p in payloads)
                )
                arrived = await self.consume(address, state, len(payloads))
                assert [e.payload for e in arrived] == payloads
                assert all(e.header("X-Test") == "a:b c" for e in arrived)
            finally:
                await sink.close()

        run(scenario())
