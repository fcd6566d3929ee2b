"""What the conformance suite needs of a connector: the `Harness` a connector's tests provide.

A harness knows one broker (one dialect, one mode) and nothing of the test definitions:
how to make a fresh address, the `from:`/`to:` sections a user would write in YAML for
it, and an "oracle" — the broker's own client — to produce and read natively. The suite
builds every source and sink the way the bridge does: a YAML file, `load_config`, then
the registry's `load_connector(kind).source(...)`/`.sink(...)`, so it depends on the
connector's public surface only.

Capabilities a broker lacks are declared as the reason it lacks them (a `str`); the
test that needs one is then skipped with that reason, never passed silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from natsbridge.bridge.config.loader import load_config
from natsbridge.bridge.connector import Sink, Source
from natsbridge.bridge.envelope import Envelope
from natsbridge.bridge.registry import load_connector
from tests.e2e.hostile import Case, Message

Headers = dict[str, list[str]]
PEER = {"kind": "nats", "servers": ["nats://127.0.0.1:4222"]}
"""The other side of every route: only its config is loaded, it is never connected."""


@dataclass(frozen=True)
class Native:
    """A message as the broker's own client writes or reads it."""

    payload: bytes
    headers: tuple[tuple[str, str], ...] = ()


class Reader:
    """Reads what a sink wrote to one address, natively, continuing where it stopped."""

    async def read(self, count: int, timeout: float = 15.0) -> list[Native]:
        """The next `count` messages, in order; fewer if `timeout` seconds pass first."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the oracle's connection."""


@dataclass
class Harness:
    """One connector on one real broker; subclass per kind/dialect and list it in HARNESSES.

    `endpoint` is the value of the harness's `fixture` (a URL or bootstrap address);
    `tmp` is the test's directory; `name` is unique per test.
    """

    id: ClassVar[str]
    """The test id, e.g. "stomp-activemq"."""
    kind: ClassVar[str]
    """The connection `kind`, as in YAML and the registry."""
    fixture: ClassVar[str]
    """The conftest fixture giving the broker's endpoint (skips/fails like every test)."""
    mark: ClassVar[str]
    """The pytest mark of that broker (`-m "not kafka"` deselects it)."""

    redelivery: ClassVar[str | None] = None
    """None, or why the broker cannot give back a nacked or unsettled message."""
    acks_each: ClassVar[bool] = True
    """False where the source commits a position (Kafka offsets): an acked message after
    the first unsettled one of its partition may come again after a reopen."""
    multi_values: ClassVar[str | None] = None
    """None, or why a header cannot keep several values across the broker."""
    renames_reserved: ClassVar[str | None] = None
    """None, or why the source does not rename reserved (Nats-*, Bridge-*) header names."""
    control_values: ClassVar[str | None] = None
    """None, or why a header value with control characters cannot cross the broker: the
    sink must then refuse such a message for good (it is dead-lettered, not lost)."""

    endpoint: str
    tmp: Path
    name: str
    cleanups: list[Any] = field(default_factory=list)

    # ------------------------------------------------------------ the hooks

    def connection(self) -> dict[str, Any]:
        """The `connections:` entry for the broker."""
        raise NotImplementedError

    async def new_address(self) -> str:
        """A fresh address (queue, topic, destination, subject) to read or write."""
        raise NotImplementedError

    def source(self, address: str) -> dict[str, Any]:
        """The route's `from:` section reading `address` (without `connection`)."""
        raise NotImplementedError

    def sink(self, address: str) -> dict[str, Any]:
        """The route's `to:` section writing `address` (without `connection`)."""
        raise NotImplementedError

    def target(self, address: str) -> str:
        """`envelope.subject` for a message the sink should write to `address`."""
        return address

    async def produce(self, address: str, messages: Sequence[Native]) -> None:
        """Write `messages` to `address` with the broker's own client, in order, durably."""
        raise NotImplementedError

    async def reader(self, address: str) -> Reader:
        """Start observing `address` (before the sink writes: bind, subscribe...)."""
        raise NotImplementedError

    def refused(self, address: str) -> tuple[Envelope, str] | str:
        """An envelope for `address` the sink must refuse for good, and what it is; or why none."""
        return "no message this sink refuses permanently is known"

    def hostile_cases(self) -> list[Case]:
        """The hostile cases (tests/e2e/hostile.py) its producer sends to one source address."""
        return []

    async def produce_hostile(self, address: str, batch: Sequence[Message]) -> dict[str, str]:
        """Produce hostile messages; the ids the broker refused, with its answer."""
        raise NotImplementedError

    unreadable: ClassVar[frozenset[str]] = frozenset()
    """Hostile case kinds whose Incoming must carry `error` (the source cannot convert them)."""

    def ports(self) -> set[int]:
        """The broker ports the connector's sockets connect to (for `kick`)."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Delete what the test made, best effort."""

    # ------------------------------------------------------------ built by the suite

    def route_name(self, address: str) -> str:
        """The route of `address`: the same on every reopen (durable names derive from it)."""
        return "conf-" + hashlib.sha1(address.encode()).hexdigest()[:16]

    def route_file(
        self, address: str, source: dict[str, Any], sink: dict[str, Any], **route: Any
    ) -> Path:
        """A one-route YAML config, written as a user would."""
        body = {"name": self.route_name(address), "from": source, "to": sink, **route}
        connections = {"under_test": self.connection(), "peer": PEER}
        path = self.tmp / f"{self.name}-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(
            "version: 1\n"
            f"bridge: {{id: conformance, data_dir: {json.dumps(str(self.tmp / 'data'))}}}\n"
            f"connections: {json.dumps(connections)}\n"
            f"routes:\n  - {json.dumps(body)}\n"
        )
        return path

    def make_source(self, address: str, **route: Any) -> Source:
        """The connector's source for `address`, through YAML, load_config and the registry."""
        path = self.route_file(
            address,
            {"connection": "under_test", **self.source(address)},
            {"connection": "peer", "subject": "conformance.out"},
            **route,
        )
        config = load_config(path)
        [loaded] = config.routes
        source = load_connector(self.kind).source(
            loaded, config.connections["under_test"], config.bridge
        )
        assert isinstance(source, Source)
        return source

    def make_sink(self, address: str, **route: Any) -> Sink:
        """The connector's sink writing `address`, built as `make_source` builds a source."""
        path = self.route_file(
            address,
            {"connection": "peer", "subject": "conformance.in.>"},
            {"connection": "under_test", **self.sink(address)},
            **route,
        )
        config = load_config(path)
        [loaded] = config.routes
        sink = load_connector(self.kind).sink(
            loaded, config.connections["under_test"], config.bridge
        )
        assert isinstance(sink, Sink)
        return sink


# ---------------------------------------------------------------- helpers for definitions


def header_pairs(envelope: Envelope) -> list[tuple[str, str]]:
    """An envelope's headers as (name, value) pairs."""
    return [(name, value) for name, values in envelope.headers.items() for value in values]


class Kicker:
    """Drops the TCP connections this process opened to a broker after it was created.

    Sockets open at creation (an oracle's subscription) are spared; the rest, found
    through /proc/self/fd (so that a C library's sockets count too: librdkafka's), are
    shut down both ways, so that the client sees the connection end as when the broker
    or the network drops it. Shared brokers are never restarted.
    """

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.spared = set(self._sockets())

    def _sockets(self) -> dict[str, int]:
        """The open TCP sockets to `ports`: their inode ("socket:[n]") and descriptor."""
        found: dict[str, int] = {}
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{name}")
                if not target.startswith("socket:"):
                    continue
                with socket.socket(fileno=os.dup(int(name))) as sock:
                    inet = sock.family in (socket.AF_INET, socket.AF_INET6)
                    if inet and sock.getpeername()[1] in self.ports:
                        found[target] = int(name)
        return found

    def kick(self) -> int:
        """Shut down the connector's broker sockets; how many there were."""
        kicked = 0
        for target, fd in self._sockets().items():
            if target not in self.spared:
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                    kicked += 1
        return kicked


async def wait_for(check: Any, timeout: float, what: str) -> None:
    """Poll `check()` until true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.05)
